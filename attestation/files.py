"""How TwinTEE writes files that must be whole or private: atomic replacement, owner-only key files.

`atomic_writer` / `write_atomic` serve the manifest, the encrypted shards and the signed policy;
`write_private_file` / `ensure_ed25519_key` serve the simulated platform's keys, the release key,
the model owner's key and the broker's master key.
"""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding, NoEncryption, PrivateFormat, PublicFormat, load_pem_private_key)

from attestation.errors import AttestationError

PRIVATE, PUBLIC = 0o600, 0o644


class KeyFileError(AttestationError):
    """A key file is missing, unreadable or not an Ed25519 private key."""

    def __init__(self, detail: str):
        super().__init__("key_file", detail)


@contextmanager
def atomic_writer(path: Path, mode: int = PRIVATE) -> Iterator[BinaryIO]:
    """Yields a temp file beside `path` that replaces it only once the block ends without error.

    Readers see the old file or the new one, never half of one; after a crash the new one is on disk
    only if it was complete: the data is fsynced before the rename and the directory after it (the
    rename itself lives in the directory, and is lost with it otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = PRIVATE) -> None:
    with atomic_writer(path, mode) as out:
        out.write(data)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Creates `path` with mode 0600 from the start (no window where it is world-readable); refuses
    to overwrite an existing file (O_EXCL), so a second writer can never replace a key in use."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyFileError(f"cannot load key {path.name}: {type(e).__name__}; run `make prepare`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path.name} is not an Ed25519 key")
    return key


def ensure_ed25519_key(path: Path, public_path: Path | None = None) -> Ed25519PrivateKey:
    """The Ed25519 key at `path`, made (0600, in a 0700 folder if new) when missing; its public half
    is written as PEM to `public_path` when given and missing. An existing key is never replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        write_private_file(path, Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    key = load_private_key(path)
    if public_path is not None and not Path(public_path).exists():
        write_atomic(public_path, key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
                     mode=PUBLIC)
    return key
