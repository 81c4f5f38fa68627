"""Tenants: who may call node1, their API keys (stored only as SHA-256) and their policy; and the
operator's CLI, `python -m node1.tenants create|revoke|list|dev` (what `make tenant*` runs).

A key is `tt-<key id>-<secret>`: the key id finds the row, the secret's SHA-256 is compared in constant
time. The secret is 32 random bytes, so a plain hash is as strong as an HMAC here and needs no node secret.
"""
import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from node1.store import Store

KEY_PREFIX = "tt"


class Unauthorized(Exception):
    """A missing, malformed, unknown or revoked key (-> 401)."""


class TenantError(ValueError):
    """An operator's request the store cannot carry out (a tenant that exists, or does not)."""


@dataclass(frozen=True)
class Policy:
    """A tenant's limits; 0 means no limit, an empty `models` allows every model."""

    rpm: int = 0  # requests per minute, every authenticated request counted
    tpm: int = 0  # prompt + completion tokens per minute
    tokens_per_day: int = 0  # per UTC day
    max_concurrent: int = 0
    max_tokens: int = 0  # the largest max_tokens one request may ask for
    models: tuple[str, ...] = ()

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "models" and (not isinstance(value, int) or value < 0):
                raise TenantError(f"{f.name.upper()} must be a whole number >= 0 (0: no limit)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        raw = json.loads(text)
        return cls(**{**raw, "models": tuple(raw.get("models", ()))})


@dataclass(frozen=True)
class Tenant:
    name: str
    policy: Policy


def new_key() -> tuple[str, str, str]:
    """-> (the key to show once, its key id, the SHA-256 to store)."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return f"{KEY_PREFIX}-{key_id}-{secret}", key_id, _digest(secret)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_bearer(authorization: str | None) -> str:
    """`Bearer <key>` -> key, or Unauthorized naming what is missing (never echoing the key)."""
    if not authorization:
        raise Unauthorized("no API key: send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    return key.strip()


class Tenants:
    """The tenants table: create, revoke, list, and authenticate a key (read on every request, so a
    revocation takes effect on the next one)."""

    def __init__(self, store: Store):
        self.store = store

    def create(self, name: str, policy: Policy) -> str:
        """-> the new key (shown once). A revoked tenant of that name is re-keyed; a live one is refused."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise TenantError("NAME must be letters, digits, '-' or '_'")
        key, key_id, digest = new_key()
        with self.store.write() as q:
            row = q("SELECT revoked_at FROM tenants WHERE name = ?", (name,))
            if row and row[0][0] is None:
                raise TenantError(f"tenant {name!r} exists; revoke it first to issue a new key")
            q("DELETE FROM tenants WHERE name = ?", (name,))
            q("INSERT INTO tenants (name, key_id, key_hash, policy, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL)",
              (name, key_id, digest, policy.to_json(), time.time()))
        return key

    def revoke(self, name: str) -> None:
        with self.store.write() as q:
            if not q("SELECT name FROM tenants WHERE name = ? AND revoked_at IS NULL", (name,)):
                raise TenantError(f"no live tenant {name!r}")
            q("UPDATE tenants SET revoked_at = ? WHERE name = ?", (time.time(), name))

    def listing(self) -> list[dict]:
        rows = self.store.rows("SELECT name, policy, created_at, revoked_at FROM tenants ORDER BY name")
        return [{"name": n, **asdict(Policy.from_json(p)), "created_at": c, "revoked": r is not None}
                for n, p, c, r in rows]

    def authenticate(self, authorization: str | None) -> Tenant:
        key = parse_bearer(authorization)
        prefix, _, rest = key.partition("-")
        key_id, _, secret = rest.partition("-")
        rows = self.store.rows("SELECT name, key_hash, policy, revoked_at FROM tenants WHERE key_id = ?", (key_id,)) \
            if prefix == KEY_PREFIX and key_id and secret else []
        # Hash even when nothing matched, so an unknown key id costs what a wrong secret does.
        digest = _digest(secret)
        stored = rows[0][1] if rows else "0" * 64
        if not rows or not hmac.compare_digest(digest, stored):
            raise Unauthorized("invalid API key")
        name, _, policy, revoked_at = rows[0]
        if revoked_at is not None:
            raise Unauthorized("this API key was revoked")
        return Tenant(name, Policy.from_json(policy))


def ensure_key(tenants: Tenants, key_file: Path, name: str = "dev") -> str:
    """The local default: tenant `name`'s key from `key_file`, (re)issued with no limits and written
    0600 when the file is missing or its key no longer opens this database."""
    if key_file.exists():
        key = key_file.read_text().strip()
        try:
            tenants.authenticate(f"Bearer {key}")
            return key
        except Unauthorized:
            pass  # a new ledger database, or a revoked key: issue a fresh one
    if any(t["name"] == name and not t["revoked"] for t in tenants.listing()):
        tenants.revoke(name)
    key = tenants.create(name, Policy())
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(key_file, 0o600)
    return key


def _policy_args(parser: argparse.ArgumentParser) -> None:
    for name in ("rpm", "tpm", "tokens-per-day", "max-concurrent", "max-tokens"):
        parser.add_argument(f"--{name}", type=int, default=0)
    parser.add_argument("--models", default="", help="comma-separated model ids (empty: all)")


def main(argv=None) -> int:
    from node1.config import ledger_settings

    parser = argparse.ArgumentParser(prog="python -m node1.tenants")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create")
    create.add_argument("name")
    _policy_args(create)
    sub.add_parser("revoke").add_argument("name")
    sub.add_parser("list")
    sub.add_parser("dev")
    args = parser.parse_args(argv)
    ledger_url, data_dir = ledger_settings(os.environ)
    tenants = Tenants(Store.open(ledger_url, data_dir))
    try:
        if args.command == "create":
            policy = Policy(args.rpm, args.tpm, args.tokens_per_day, args.max_concurrent, args.max_tokens,
                            tuple(m for m in args.models.split(",") if m))
            key = tenants.create(args.name, policy)
            print(f"tenant {args.name} created: {policy.to_json()}\nits API key, shown once:")
            print(key)
        elif args.command == "revoke":
            tenants.revoke(args.name)
            print(f"tenant {args.name} revoked: its key is refused from the next request on")
        elif args.command == "list":
            for t in tenants.listing():
                print(json.dumps(t, sort_keys=True))
        else:
            print(ensure_key(tenants, Path(data_dir) / "dev-api-key"))
    except TenantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
