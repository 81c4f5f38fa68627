"""The database under tenants and the usage ledger: SQLite in WAL mode by default, PostgreSQL when
TWINTEE_LEDGER_URL names one (so node1 replicas share both). One portable schema, `?` placeholders."""
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, key_id TEXT UNIQUE NOT NULL, "
    "key_hash TEXT NOT NULL, policy TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
    "revoked_at DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS ledger (seq BIGINT PRIMARY KEY, tenant TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, "
    "day TEXT NOT NULL, model TEXT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, "
    "finish_reason TEXT NOT NULL, node1 TEXT NOT NULL, node2 TEXT NOT NULL, layers1 INTEGER NOT NULL, "
    "layers2 INTEGER NOT NULL, prev_hash TEXT NOT NULL, row_hash TEXT NOT NULL, signer TEXT NOT NULL, "
    "signature TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ledger_tenant_ts ON ledger (tenant, ts)",
    "CREATE TABLE IF NOT EXISTS ledger_signers (public_key TEXT PRIMARY KEY, evidence TEXT NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL)",
)
PG_WRITE_LOCK = 7_1515  # pg_advisory_xact_lock key: one writer at a time across replicas keeps the chain linear
BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another process's write transaction


class StoreError(RuntimeError):
    """The database is unreachable or refused a statement."""


def sqlite_path(data_dir: Path) -> Path:
    return Path(data_dir) / "ledger.sqlite3"


class Store:
    """Thread-local connections to one database; `write()` is a serialized transaction, `rows()` a read."""

    def __init__(self, url: str):
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._local = threading.local()
        with self.write() as q:
            for statement in SCHEMA:
                q(statement)

    @classmethod
    def open(cls, ledger_url: str, data_dir: Path) -> "Store":
        if ledger_url:
            return cls(ledger_url)
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        return cls(str(sqlite_path(data_dir)))

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self):
        if self.postgres:
            import psycopg

            try:
                return psycopg.connect(self.url, autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(f"cannot reach the ledger database: {type(exc).__name__}") from None
        conn = sqlite3.connect(self.url, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss, not only kill -9
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def rows(self, sql: str, params=()) -> list[tuple]:
        cur = self._conn().execute(self._sql(sql), tuple(params))
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    @contextmanager
    def write(self):
        """One write transaction at a time, across threads and processes (and replicas on PostgreSQL)."""
        conn = self._conn()
        conn.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
        try:
            if self.postgres:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_WRITE_LOCK,))

            def q(sql, params=()):
                cur = conn.execute(self._sql(sql), tuple(params))
                return [tuple(r) for r in cur.fetchall()] if cur.description else []

            yield q
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
