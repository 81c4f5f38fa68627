"""The broker's append-only, hash-chained audit log (JSON lines): who asked for which key, and the verdict.

Each entry carries the hash of the previous one, so editing, deleting or reordering any line breaks
every later link. Dropping lines from the end cannot be seen from the file alone: compare the head
hash and entry count against a copy kept elsewhere. Entries hold ids and verdicts, never key material.
"""
import fcntl
import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from attestation.canonical import canonical_json

GENESIS = "0" * 64
VERDICTS = ("released", "refused")
MAX_FIELD_CHARS = 200  # fields can come from requests: bound what a client can make us store
_TAIL_BYTES = 64 * 1024  # entries are bounded well below this, so the last line fits in it


class AuditError(Exception):
    """The audit log cannot be appended to safely (unwritable, or its last line is corrupt)."""


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def _field(value):
    if value is None or isinstance(value, (bool, int)):
        return value
    return str(value)[:MAX_FIELD_CHARS]


def _fields(values: dict) -> dict:
    return {str(k)[:MAX_FIELD_CHARS]: _field(v) for k, v in values.items()}


def _last_entry(f) -> dict | None:
    """The last entry of the open log, read from its tail (another process may have appended)."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return None
    f.seek(max(0, end - _TAIL_BYTES))
    lines = f.read().rstrip(b"\n").split(b"\n")
    try:
        entry = json.loads(lines[-1])
        if isinstance(entry, dict) and isinstance(entry.get("seq"), int) and entry.get("hash"):
            return entry
    except ValueError:
        pass
    raise AuditError(f"last line of {f.name} is corrupt; run verify-audit before appending")


class AuditLog:
    """Appends entries under a thread lock and an exclusive file lock, fsyncing each one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, *, who: dict, what: dict, verdict: str, reason: str) -> dict:
        assert verdict in VERDICTS, verdict
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, open(self.path, "a+b") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
                last = _last_entry(f)
                entry = {
                    "seq": last["seq"] + 1 if last else 0,
                    "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "who": _fields(who), "what": _fields(what), "verdict": verdict,
                    "reason": _field(reason), "prev": last["hash"] if last else GENESIS,
                }
                entry["hash"] = entry_hash(entry)
                f.write(canonical_json(entry) + b"\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise AuditError(f"cannot append to {self.path}: {e.strerror}") from None
        return entry


def _parse(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def verify_chain(path: Path) -> tuple[bool, list[dict], int | None]:
    """(ok, the entries verified before the first break, seq at which the chain first breaks)."""
    entries, prev = [], GENESIS
    with open(path, "rb") as f:
        for seq, line in enumerate(f):
            entry = _parse(line)
            if (entry is None or entry.get("seq") != seq or entry.get("prev") != prev
                    or entry.get("hash") != entry_hash(entry)):
                return False, entries, seq
            entries.append(entry)
            prev = entry["hash"]
    return True, entries, None
