"""Tests for shared/shard_crypto.py: round trips and every kind of tampering."""
import hashlib
import os

import pytest

from shared import shard_crypto as sc
from shared.shard_crypto import ShardError, decrypt_to_memory, encrypt_bytes_to_file, encrypt_file

KEY = bytes(range(32))
KID = "smollm2:v1:node1"
CHUNK = 1000  # small chunks so a few KB of plaintext spans several


@pytest.fixture
def plaintext():
    return os.urandom(4 * CHUNK + 123)  # 5 chunks, the last one short


@pytest.fixture
def shard(tmp_path, plaintext):
    src = tmp_path / "plain.bin"
    src.write_bytes(plaintext)
    dst = tmp_path / "shard.enc"
    info = encrypt_file(src, dst, KEY, KID, chunk_bytes=CHUNK)
    return dst, info


def header_len(path) -> int:
    with open(path, "rb") as f:
        return len(sc.read_header(f)[1])


def chunk_span(path, index: int) -> slice:
    start = header_len(path) + index * (CHUNK + sc.TAG_BYTES)
    return slice(start, start + CHUNK + sc.TAG_BYTES)


def open_shard(path, info, key=KEY, kid=KID):
    return decrypt_to_memory(path, key, key_id=kid, plaintext_sha256=info["plaintext_sha256"])


def mutate(path, fn):
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(fn(data)))


def flip(data: bytearray, offset: int, bit: int = 0) -> bytearray:
    data[offset] ^= 1 << bit
    return data


def test_round_trip_several_chunks(shard, plaintext):
    path, info = shard
    assert open_shard(path, info) == plaintext
    assert info["size"] == len(plaintext)
    assert info["plaintext_sha256"] == hashlib.sha256(plaintext).hexdigest()
    assert info["ciphertext_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert plaintext[:64] not in path.read_bytes()


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK])
def test_bytes_round_trip_edge_sizes(tmp_path, size):
    data = os.urandom(size)
    dst = tmp_path / "s.enc"
    info = encrypt_bytes_to_file(data, dst, KEY, KID, chunk_bytes=CHUNK)
    assert open_shard(dst, info) == data
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_file_and_bytes_produce_same_plaintext_hash(tmp_path, plaintext, shard):
    info = encrypt_bytes_to_file(plaintext, tmp_path / "b.enc", KEY, KID, chunk_bytes=CHUNK)
    assert info["plaintext_sha256"] == shard[1]["plaintext_sha256"]
    assert info["ciphertext_sha256"] != shard[1]["ciphertext_sha256"]  # fresh file id


def test_header_every_bit_flip_is_refused(shard):
    path, info = shard
    original = path.read_bytes()
    for offset in range(header_len(path)):
        for bit in range(8):
            path.write_bytes(bytes(flip(bytearray(original), offset, bit)))
            with pytest.raises(ShardError):
                open_shard(path, info)


@pytest.mark.parametrize("offset, cause", [(0, "malformed"), (8, "unsupported_version")])
def test_header_magic_and_version_named(shard, offset, cause):
    path, info = shard
    mutate(path, lambda d: flip(d, offset))
    with pytest.raises(ShardError) as e:
        open_shard(path, info)
    assert e.value.cause == cause


def test_header_file_id_flip_fails_tag_at_chunk_0(shard):
    path, info = shard
    mutate(path, lambda d: flip(d, 8 + 1 + 4 + 8))  # first byte of the file id
    with pytest.raises(ShardError, match="chunk 0") as e:
        open_shard(path, info)
    assert e.value.cause == "tag"


@pytest.mark.parametrize("index", [0, 2, 4])
def test_chunk_bit_flip_names_the_chunk(shard, index):
    path, info = shard
    mutate(path, lambda d: flip(d, chunk_span(path, index).start + 5, 3))
    with pytest.raises(ShardError, match=f"chunk {index}") as e:
        open_shard(path, info)
    assert e.value.cause == "tag"


def test_last_tag_bit_flip(shard):
    path, info = shard
    mutate(path, lambda d: flip(d, len(d) - 1, 7))
    with pytest.raises(ShardError, match="chunk 4") as e:
        open_shard(path, info)
    assert e.value.cause == "tag"


@pytest.mark.parametrize("cut", [1, 139, 1016 + 139])  # inside the last chunk; whole last chunk
def test_truncation(shard, cut):
    path, info = shard
    mutate(path, lambda d: d[:-cut])
    with pytest.raises(ShardError) as e:
        open_shard(path, info)
    assert e.value.cause == "truncated"


def test_truncated_to_header_only(shard):
    path, info = shard
    mutate(path, lambda d: d[:header_len(path)])
    with pytest.raises(ShardError) as e:
        open_shard(path, info)
    assert e.value.cause == "truncated"


def test_truncated_inside_header(shard):
    path, info = shard
    mutate(path, lambda d: d[:10])
    with pytest.raises(ShardError) as e:
        open_shard(path, info)
    assert e.value.cause == "truncated"


def test_swapping_two_chunks(shard):
    path, info = shard
    a, b = chunk_span(path, 1), chunk_span(path, 2)

    def swap(d):
        d[a], d[b] = d[b], d[a]
        return d
    mutate(path, swap)
    with pytest.raises(ShardError, match="chunk 1") as e:
        open_shard(path, info)
    assert e.value.cause == "tag"


def test_chunk_from_another_file_same_key(tmp_path, shard, plaintext):
    path, info = shard
    other = tmp_path / "other.enc"
    encrypt_bytes_to_file(plaintext, other, KEY, KID, chunk_bytes=CHUNK)
    span = chunk_span(path, 1)
    foreign = other.read_bytes()[span]
    mutate(path, lambda d: d[:span.start] + foreign + d[span.stop:])
    with pytest.raises(ShardError, match="chunk 1"):
        open_shard(path, info)


def test_appended_chunk(shard):
    path, info = shard
    mutate(path, lambda d: d + d[chunk_span(path, 0)])
    with pytest.raises(ShardError) as e:
        open_shard(path, info)
    assert e.value.cause == "trailing_data"


def test_wrong_key(shard):
    path, info = shard
    with pytest.raises(ShardError, match="chunk 0") as e:
        open_shard(path, info, key=bytes(32))
    assert e.value.cause == "tag"


def test_wrong_key_id(shard):
    path, info = shard
    with pytest.raises(ShardError, match="smollm2:v1:node2") as e:
        open_shard(path, info, kid="smollm2:v1:node2")
    assert e.value.cause == "wrong_key_id"


def test_hash_mismatch(shard):
    path, _ = shard
    with pytest.raises(ShardError) as e:
        decrypt_to_memory(path, KEY, key_id=KID, plaintext_sha256="0" * 64)
    assert e.value.cause == "hash_mismatch"


def test_bad_arguments_rejected(tmp_path):
    with pytest.raises(ValueError):
        encrypt_bytes_to_file(b"x", tmp_path / "s", KEY[:16], KID)
    with pytest.raises(ValueError):
        encrypt_bytes_to_file(b"x", tmp_path / "s", KEY, "")
    with pytest.raises(ValueError):
        encrypt_bytes_to_file(b"x", tmp_path / "s", KEY, KID, chunk_bytes=0)
