"""attestation/files.py: atomic replacement (data and directory fsynced) and owner-only key files,
and the writers that use them: the manifest, the shard files, the signed policy, every key."""
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from attestation import files
from attestation.files import (KeyFileError, atomic_writer, ensure_ed25519_key, load_private_key, write_atomic,
                               write_private_file)
from attestation.manifest import write_manifest
from broker.kms import create_master_key
from release.bless import bless
from release.publish import owner_key
from shared.shard_crypto import encrypt_bytes_to_file


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def fsynced(monkeypatch):
    """Records what each os.fsync call flushed: ("dir", path) or ("file", size)."""
    seen, real = [], os.fsync

    def record(fd):
        st = os.fstat(fd)
        seen.append(("dir", os.path.realpath(f"/proc/self/fd/{fd}")) if stat.S_ISDIR(st.st_mode) else ("file", st.st_size))
        real(fd)

    monkeypatch.setattr(files.os, "fsync", record)
    return seen


def test_write_atomic_replaces_whole_and_fsyncs_file_then_directory(tmp_path, fsynced):
    target = tmp_path / "sub" / "doc.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new!")
    assert target.read_bytes() == b"new!" and mode(target) == 0o600
    assert fsynced[-2:] == [("file", 4), ("dir", str(target.parent.resolve()))]
    assert os.listdir(target.parent) == ["doc.json"]  # no temp file left behind
    write_atomic(target, b"{}", mode=files.PUBLIC)
    assert mode(target) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "doc.json"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as out:
            out.write(b"half of the new")
            raise RuntimeError("the writer failed midway")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["doc.json"]


@pytest.mark.parametrize("write", [
    lambda p: write_manifest(p, {"body": {}}),
    lambda p: encrypt_bytes_to_file(os.urandom(3000), p, bytes(32), "m:v1:node1", chunk_bytes=1000),
])
def test_manifest_and_shard_writers_are_atomic(tmp_path, fsynced, write):
    target = tmp_path / "model" / "out"
    write(target)
    assert fsynced[-1] == ("dir", str(target.parent.resolve())) and mode(target) == 0o600
    assert os.listdir(target.parent) == ["out"]


def test_bless_writes_its_policy_atomically_and_fsyncs_the_directory(tmp_path, fsynced):
    project, data = tmp_path / "project", tmp_path / "data"
    for rel in ("node1/a.py", "node2/a.py", "shared/a.py", "attestation/a.py", "broker/a.py", "webui/a.js"):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("#\n")
    write_manifest(data / "model" / "manifest.json",
                   {"body": {"model_id": "m", "version": 1, "split_layer": 1}})
    bless(project, data)
    policy = data / "policy.json"
    assert mode(policy) == 0o644  # public: node1 serves it at /policy
    assert fsynced[-2:] == [("file", policy.stat().st_size), ("dir", str(data.resolve()))]
    assert not [p for p in os.listdir(data) if p.endswith(".tmp")]


def test_ensure_key_makes_a_private_key_once_and_its_public_pem(tmp_path):
    key_path, pub_path = tmp_path / "keys" / "k.key", tmp_path / "keys" / "k.pub"
    key = ensure_ed25519_key(key_path, pub_path)
    assert mode(key_path) == 0o600 and mode(key_path.parent) == 0o700 and mode(pub_path) == 0o644
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    again = ensure_ed25519_key(key_path, pub_path)  # an existing key is kept, never replaced
    assert again.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()


def test_owner_release_and_master_keys_are_private(tmp_path):
    owner_key(tmp_path)
    create_master_key(tmp_path / "keys" / "master.key")
    assert mode(tmp_path / "keys" / "owner.key") == 0o600 and mode(tmp_path / "keys" / "master.key") == 0o600
    assert (tmp_path / "keys" / "owner.pub").exists()


def test_private_file_refuses_to_overwrite(tmp_path):
    write_private_file(tmp_path / "secret", b"a")
    with pytest.raises(FileExistsError):
        write_private_file(tmp_path / "secret", b"b")
    assert (tmp_path / "secret").read_bytes() == b"a"


@pytest.mark.parametrize("content", [b"", b"not a key",
                                     X25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                                               NoEncryption())])
def test_load_private_key_names_the_file(tmp_path, content):
    (tmp_path / "bad.key").write_bytes(content)
    with pytest.raises(KeyFileError, match="bad.key"):
        load_private_key(tmp_path / "bad.key")
    with pytest.raises(KeyFileError, match="missing.key"):
        load_private_key(tmp_path / "missing.key")
