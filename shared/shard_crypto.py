"""The encrypted shard file format: AES-256-GCM over fixed-size chunks, every byte authenticated.

Layout: header | chunk 0 | chunk 1 | ... | chunk n-1, each chunk = ciphertext || 16-byte tag.

Header: MAGIC(8) | format version u8 | chunk size u32 | plaintext size u64 | file id (8 random
bytes) | key id length u8 | key id (utf-8). Chunk i uses nonce = file id || i (u32 big-endian),
unique per key as long as file ids do not collide (2^-32 birthday bound at 2^16 files per key; each
(model, version, role) key encrypts one file). Chunk i's associated data is header || i || is_last,
so header edits, reordering, swapping chunks between files, truncation and appending all fail
authentication. Chunks keep memory bounded: the encryptor holds one chunk at a time.
"""
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from attestation.files import atomic_writer

MAGIC = b"TTSHARD\x00"
FORMAT_VERSION = 1
KEY_BYTES = 32
FILE_ID_BYTES = 8
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 4 << 20
# A header from disk can demand at most this much memory per chunk.
MAX_CHUNK_BYTES = 64 << 20
MAX_KEY_ID_BYTES = 255
MAX_CHUNKS = 1 << 32  # the chunk index is a u32 inside the 96-bit nonce

_FIXED = struct.Struct(">8sBIQ8sB")  # magic, version, chunk size, plaintext size, file id, key id len


class ShardError(Exception):
    """A shard file was refused. `cause` is one of: malformed, unsupported_version, wrong_key_id,
    truncated, trailing_data, tag, hash_mismatch."""

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail


@dataclass(frozen=True)
class ShardHeader:
    chunk_bytes: int
    plaintext_size: int
    file_id: bytes
    key_id: str

    def encode(self) -> bytes:
        kid = self.key_id.encode()
        return _FIXED.pack(MAGIC, FORMAT_VERSION, self.chunk_bytes, self.plaintext_size,
                           self.file_id, len(kid)) + kid

    def num_chunks(self) -> int:
        # An empty plaintext still gets one (empty) authenticated chunk, so "no chunks" is truncation.
        return max(1, -(-self.plaintext_size // self.chunk_bytes))

    def chunk_len(self, index: int) -> int:
        """Plaintext length of chunk `index`."""
        return min(self.chunk_bytes, self.plaintext_size - index * self.chunk_bytes)

    def ciphertext_size(self) -> int:
        return self.plaintext_size + self.num_chunks() * TAG_BYTES


def _nonce(file_id: bytes, index: int) -> bytes:
    return file_id + index.to_bytes(4, "big")


def _aad(header_bytes: bytes, index: int, is_last: bool) -> bytes:
    return header_bytes + index.to_bytes(4, "big") + (b"\x01" if is_last else b"\x00")


def _check_args(key: bytes, key_id: str, chunk_bytes: int) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"shard key must be {KEY_BYTES} bytes")
    if not key_id or len(key_id.encode()) > MAX_KEY_ID_BYTES:
        raise ValueError(f"key id must be 1..{MAX_KEY_ID_BYTES} utf-8 bytes")
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk size must be in 1..{MAX_CHUNK_BYTES}")


def _seal_to_file(chunks: Iterator[bytes], header: ShardHeader, dst: Path, key: bytes) -> dict:
    """Write header and sealed chunks to dst atomically (attestation.files); return the two hashes."""
    if header.num_chunks() > MAX_CHUNKS:
        raise ValueError("too many chunks for the nonce space; raise chunk_bytes")
    aead, head = AESGCM(key), header.encode()
    last = header.num_chunks() - 1
    pt_hash, ct_hash = hashlib.sha256(), hashlib.sha256(head)
    with atomic_writer(dst) as out:
        out.write(head)
        for index, chunk in enumerate(chunks):
            pt_hash.update(chunk)
            sealed = aead.encrypt(_nonce(header.file_id, index), chunk, _aad(head, index, index == last))
            ct_hash.update(sealed)
            out.write(sealed)
    return {"plaintext_sha256": pt_hash.hexdigest(), "ciphertext_sha256": ct_hash.hexdigest(),
            "size": header.plaintext_size}


def _file_chunks(src: BinaryIO, header: ShardHeader) -> Iterator[bytes]:
    for index in range(header.num_chunks()):
        want = header.chunk_len(index)
        chunk = src.read(want)
        if len(chunk) != want:
            raise ValueError("source file changed size during encryption")
        yield chunk
    if src.read(1):
        raise ValueError("source file grew during encryption")


def encrypt_file(src: Path, dst: Path, key: bytes, key_id: str,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> dict:
    """Encrypt src into the shard file dst; returns {"plaintext_sha256", "ciphertext_sha256", "size"}."""
    _check_args(key, key_id, chunk_bytes)
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = ShardHeader(chunk_bytes, size, os.urandom(FILE_ID_BYTES), key_id)
        return _seal_to_file(_file_chunks(f, header), header, Path(dst), key)


def encrypt_bytes_to_file(data: bytes, dst: Path, key: bytes, key_id: str,
                          chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> dict:
    """Encrypt in-memory plaintext into the shard file dst, so plaintext never touches the disk."""
    _check_args(key, key_id, chunk_bytes)
    header = ShardHeader(chunk_bytes, len(data), os.urandom(FILE_ID_BYTES), key_id)
    view = memoryview(data)
    chunks = (bytes(view[i * chunk_bytes:i * chunk_bytes + header.chunk_len(i)])
              for i in range(header.num_chunks()))
    return _seal_to_file(chunks, header, Path(dst), key)


def read_header(f: BinaryIO) -> tuple[ShardHeader, bytes]:
    """Parse the header at the start of f; returns it and its exact bytes (the AAD prefix)."""
    fixed = f.read(_FIXED.size)
    if len(fixed) < _FIXED.size:
        raise ShardError("truncated", "file ends inside the header")
    magic, version, chunk_bytes, size, file_id, kid_len = _FIXED.unpack(fixed)
    if magic != MAGIC:
        raise ShardError("malformed", "not a TwinTEE shard file (bad magic)")
    if version != FORMAT_VERSION:
        raise ShardError("unsupported_version", f"format version {version}")
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ShardError("malformed", f"chunk size {chunk_bytes} out of range")
    kid = f.read(kid_len)
    if len(kid) < kid_len:
        raise ShardError("truncated", "file ends inside the header")
    try:
        key_id = kid.decode()
    except UnicodeDecodeError:
        raise ShardError("malformed", "key id is not utf-8") from None
    return ShardHeader(chunk_bytes, size, file_id, key_id), fixed + kid


def _open_chunks(f: BinaryIO, header: ShardHeader, head: bytes, key: bytes) -> Iterator[bytes]:
    aead, last = AESGCM(key), header.num_chunks() - 1
    for index in range(header.num_chunks()):
        want = header.chunk_len(index) + TAG_BYTES
        sealed = f.read(want)
        if len(sealed) < want:
            raise ShardError("truncated", f"chunk {index} has {len(sealed)} of {want} bytes")
        try:
            yield aead.decrypt(_nonce(header.file_id, index), sealed, _aad(head, index, index == last))
        except InvalidTag:
            raise ShardError("tag", f"authentication failed at chunk {index} "
                                    "(wrong key, or the file was modified)") from None
    if f.read(1):
        raise ShardError("trailing_data", f"data after the last chunk ({last})")


def decrypt_to_memory(path: Path, key: bytes, *, key_id: str, plaintext_sha256: str) -> bytes:
    """Decrypt and verify a shard entirely in memory (peak about twice the plaintext size)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"shard key must be {KEY_BYTES} bytes")
    with open(path, "rb") as f:
        header, head = read_header(f)
        if header.key_id != key_id:
            raise ShardError("wrong_key_id", f"file is sealed under {header.key_id!r}, "
                                             f"expected {key_id!r}")
        # Check the length before allocating anything the header asks for.
        actual = os.fstat(f.fileno()).st_size - len(head)
        if actual < header.ciphertext_size():
            raise ShardError("truncated", f"{actual} of {header.ciphertext_size()} chunk bytes")
        digest, parts = hashlib.sha256(), []
        for part in _open_chunks(f, header, head, key):
            digest.update(part)
            parts.append(part)
    if digest.hexdigest() != plaintext_sha256.lower():
        raise ShardError("hash_mismatch", "plaintext sha256 differs from the manifest")
    return b"".join(parts)
