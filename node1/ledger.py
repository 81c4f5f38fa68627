"""The usage ledger: one row per generation (tenant, time, model, tokens, finish reason, the node pair
that served it; never content), each row's hash chained to the previous one and signed by node1's
attested ledger key, so an operator holding the database cannot quietly edit, drop or reorder rows."""
import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node1.store import Store

GENESIS = "00" * 32
DAY_S = 86400.0
SIGNED_PREFIX = b"twintee/ledger-head/v1"  # what a ledger signature covers: this, then the row's hash


@dataclass(frozen=True)
class UsageRow:
    tenant: str
    ts: float
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    node1: str  # node1's measurement
    node2: str  # node2's measurement, as node1 appraised it
    layers1: int  # decoder layers each node computed per token (operator accounting)
    layers2: int

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.ts, timezone.utc).strftime("%Y-%m-%d")


COLUMNS = tuple(UsageRow.__dataclass_fields__)


def row_hash(prev_hash: str, row: UsageRow) -> str:
    """SHA-256(previous hash || canonical JSON of the row): the seq number is not in it, so a moved row
    shows as a broken link rather than an edit."""
    body = json.dumps(asdict(row), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def signed_message(digest: str) -> bytes:
    return SIGNED_PREFIX + bytes.fromhex(digest)


def utc_day_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts, timezone.utc)
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()


class Ledger:
    """Appends rows (one writer at a time: the chain is linear) and answers the sums quotas and
    /v1/usage need. `attest(public_key) -> evidence` binds the signing key to this node's measurement."""

    def __init__(self, store: Store, attest=None):
        self.store, self.attest = store, attest
        self.key = Ed25519PrivateKey.generate()  # per process: lives and dies inside the enclave
        self.public_key = self.key.public_key().public_bytes_raw().hex()
        self._signer_known = False
        self._lock = threading.Lock()  # one writer per process; the store serializes processes

    def record(self, row: UsageRow) -> str:
        """Writes `row` durably (committed before this returns) -> its hash."""
        evidence = None if self._signer_known else json.dumps(self.attest(bytes.fromhex(self.public_key))
                                                                 if self.attest else {})
        with self._lock, self.store.write() as q:
            if evidence is not None:
                if not q("SELECT public_key FROM ledger_signers WHERE public_key = ?", (self.public_key,)):
                    q("INSERT INTO ledger_signers (public_key, evidence, created_at) VALUES (?, ?, ?)",
                      (self.public_key, evidence, time.time()))
            last = q("SELECT seq, row_hash FROM ledger ORDER BY seq DESC LIMIT 1")
            seq, prev = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS)
            digest = row_hash(prev, row)
            signature = self.key.sign(signed_message(digest)).hex()
            q(f"INSERT INTO ledger (seq, day, {', '.join(COLUMNS)}, prev_hash, row_hash, signer, signature) "
              f"VALUES ({', '.join('?' * (len(COLUMNS) + 6))})",
              (seq, row.day, *astuple_of(row), prev, digest, self.public_key, signature))
        self._signer_known = True
        return digest

    def tokens_since(self, tenant: str, since: float) -> tuple[int, float | None]:
        """-> (prompt + completion tokens of `tenant`'s rows at or after `since`, the oldest such row's time)."""
        (total, oldest), = self.store.rows(
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0), MIN(ts) FROM ledger "
            "WHERE tenant = ? AND ts >= ?", (tenant, since))
        return int(total), oldest

    def oldest_to_leave(self, tenant: str, since: float, excess: int) -> float | None:
        """The time of the row whose leaving the window brings the tenant back under its limit."""
        running = 0
        for ts, tokens in self.store.rows("SELECT ts, prompt_tokens + completion_tokens FROM ledger "
                                          "WHERE tenant = ? AND ts >= ? ORDER BY ts", (tenant, since)):
            running += tokens
            if running >= excess:
                return ts
        return None

    def usage_by_day(self, tenant: str) -> list[dict]:
        rows = self.store.rows("SELECT day, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM ledger "
                               "WHERE tenant = ? GROUP BY day ORDER BY day", (tenant,))
        return [{"date": d, "requests": int(n), "prompt_tokens": int(p), "completion_tokens": int(c),
                 "total_tokens": int(p) + int(c)} for d, n, p, c in rows]


def astuple_of(row: UsageRow) -> tuple:
    return tuple(getattr(row, c) for c in COLUMNS)
