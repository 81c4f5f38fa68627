"""The broker's master key and the shard keys derived from it (HKDF-SHA256, as dstack's KMS does)."""
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from attestation.canonical import hex_field
from attestation.files import write_private_file
from attestation.manifest import key_id as _check_fields

MASTER_KEY_BYTES = 32
SHARD_KEY_BYTES = 32
# Salt and info name the purpose, so a key derived here is useless for any other purpose.
_SALT = b"twintee/kms/v1"
_PURPOSE = b"twintee/shard-key/v1"


class KmsError(Exception):
    """The master key could not be loaded (missing, unreadable or the wrong size)."""


class MasterKey:
    """32 secret bytes; its repr and str never show them."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes):
        if not isinstance(secret, bytes) or len(secret) != MASTER_KEY_BYTES:
            raise KmsError(f"master key must be {MASTER_KEY_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "MasterKey(<redacted>)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a MasterKey is not to be pickled")


def _parse(data: bytes, source: str) -> MasterKey:
    if len(data) == MASTER_KEY_BYTES:
        return MasterKey(data)
    try:
        raw = hex_field(data.decode("ascii").strip(), MASTER_KEY_BYTES)
    except UnicodeDecodeError:
        raw = None
    if raw is None:
        raise KmsError(f"{source} must hold {MASTER_KEY_BYTES} raw bytes or "
                       f"{2 * MASTER_KEY_BYTES} hex digits")
    return MasterKey(raw)


def load_master_key(*, path: Path | None = None, hex_value: str | None = None) -> MasterKey:
    """From exactly one of: a key file (raw or hex), or a hex value the entry point read."""
    if (path is None) == (hex_value is None):
        raise KmsError("give exactly one of a master key file or a master key value")
    if hex_value is not None:
        return _parse(hex_value.encode(), "the master key value")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KmsError(f"cannot read master key file {path}: {e.strerror}") from None
    return _parse(data, f"master key file {path}")


def create_master_key(path: Path) -> None:
    """Write 32 fresh random bytes to a new file readable only by its owner (0600)."""
    write_private_file(path, os.urandom(MASTER_KEY_BYTES))


def _length_prefixed(*parts: bytes) -> bytes:
    # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def derive_shard_key(master: MasterKey, model_id: str, version: int, role: str) -> bytes:
    """The AES-256 key for one (model, version, role) shard: HKDF-SHA256 over the master key."""
    _check_fields(model_id, version, role)
    info = _PURPOSE + _length_prefixed(model_id.encode(), str(version).encode(), role.encode())
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SHARD_KEY_BYTES, salt=_SALT, info=info)
    return hkdf.derive(master._secret)
