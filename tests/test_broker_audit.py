"""Tests for attestation/broker/audit.py and the broker CLI: the hash chain catches every edit."""
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from broker.audit import GENESIS, AuditError, AuditLog, entry_hash, verify_chain
from broker.kms import load_master_key
from attestation.canonical import canonical_json

ROOT = Path(__file__).resolve().parents[1]


def fill(path, n=5) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append(who={"role": "node1", "peer": "127.0.0.1", "measurement": "11" * 32},
                   what={"model_id": "m", "version": i, "role": "node1", "key_id": f"m:v{i}:node1"},
                   verdict="released" if i % 2 else "refused", reason="ok" if i % 2 else "nonce: x")
    return log


def lines(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "broker", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "audit.jsonl"
    fill(path)
    return path


def test_chain_verifies(log_path):
    ok, entries, bad = verify_chain(log_path)
    assert ok and bad is None and [e["seq"] for e in entries] == [0, 1, 2, 3, 4]
    assert entries[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert set(entries[0]) == {"seq", "time", "who", "what", "verdict", "reason", "prev", "hash"}


def test_reopened_log_continues_the_chain(log_path):
    fill(log_path, 2)  # a new AuditLog on the same file, as after a broker restart
    ok, entries, _ = verify_chain(log_path)
    assert ok and len(entries) == 7


def test_edited_line(log_path):
    data = lines(log_path)
    data[2] = data[2].replace(b'"refused"', b'"released"')
    log_path.write_bytes(b"".join(data))
    assert verify_chain(log_path)[0::2] == (False, 2)


def test_edited_line_with_recomputed_hash_breaks_next_link(log_path):
    data = lines(log_path)
    entry = json.loads(data[1])
    entry["reason"] = "edited"
    entry["hash"] = entry_hash(entry)
    data[1] = canonical_json(entry) + b"\n"
    log_path.write_bytes(b"".join(data))
    ok, entries, bad = verify_chain(log_path)
    assert (ok, len(entries), bad) == (False, 2, 2)


def test_deleted_line(log_path):
    data = lines(log_path)
    del data[1]
    log_path.write_bytes(b"".join(data))
    assert verify_chain(log_path)[0::2] == (False, 1)


def test_reordered_lines(log_path):
    data = lines(log_path)
    data[2], data[3] = data[3], data[2]
    log_path.write_bytes(b"".join(data))
    assert verify_chain(log_path)[0::2] == (False, 2)


def test_corrupt_tail_blocks_appends(log_path):
    with open(log_path, "ab") as f:
        f.write(b"{not json\n")
    with pytest.raises(AuditError, match="corrupt"):
        fill(log_path, 1)


def test_concurrent_appends_keep_one_chain(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl")

    def worker():
        for _ in range(20):
            log.append(who={}, what={}, verdict="refused", reason="x")
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok, entries, _ = verify_chain(tmp_path / "a.jsonl")
    assert ok and len(entries) == 80


def test_fields_from_requests_are_bounded(tmp_path):
    entry = AuditLog(tmp_path / "a.jsonl").append(
        who={"peer": "x" * 10_000}, what={"model_id": {"nested": 1}}, verdict="refused",
        reason="y" * 10_000)
    assert len(entry["who"]["peer"]) == 200 and len(entry["reason"]) == 200
    assert isinstance(entry["what"]["model_id"], str)


def test_cli_verify_audit_intact_and_broken(log_path):
    good = cli("verify-audit", log_path)
    assert good.returncode == 0, good.stderr
    summary = json.loads(good.stdout)
    assert summary["ok"] and summary["entries"] == 5 and summary["released"] == 2
    data = lines(log_path)
    del data[3]
    log_path.write_bytes(b"".join(data))
    bad = cli("verify-audit", log_path)
    assert bad.returncode == 1 and json.loads(bad.stdout)["first_bad_seq"] == 3
    missing = cli("verify-audit", log_path.with_name("missing.jsonl"))
    assert missing.returncode == 2


def test_cli_init_master_key(tmp_path):
    path = tmp_path / "master.key"
    made = cli("init-master-key", path)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = path.read_bytes()
    assert len(key) == 32 and key.hex() not in made.stdout + made.stderr
    load_master_key(path=path)
    again = cli("init-master-key", path)
    assert again.returncode == 1 and path.read_bytes() == key
