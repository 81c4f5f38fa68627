"""Publishing a release: convert, encrypt each shard under its own key, sign the manifest, bless the
reference measurements; and rotating it to a new version (`python -m release prepare|rotate`).

This is the model owner's tool: it holds the owner's signing key and the broker's master key.
Plaintext weights exist only in its memory; on disk there are only encrypted shards.
"""
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.files import ensure_ed25519_key
from broker.kms import create_master_key, derive_shard_key, load_master_key
from release.bless import bless
from attestation.manifest import key_id, load_manifest, read_public_key, sign_manifest, write_manifest
from release.prepare import prepare
from shared.shard_crypto import decrypt_to_memory, encrypt_bytes_to_file

ROOT = Path(__file__).resolve().parents[1]


def keys_dir(data_dir: Path) -> Path:
    d = data_dir / "keys"
    d.mkdir(parents=True, exist_ok=True)
    return d


def owner_key(data_dir: Path) -> Ed25519PrivateKey:
    """The model owner's Ed25519 signing key (created on first release)."""
    return ensure_ed25519_key(keys_dir(data_dir) / "owner.key", keys_dir(data_dir) / "owner.pub")


def master_key(data_dir: Path):
    path = keys_dir(data_dir) / "master.key"
    if not path.exists():
        create_master_key(path)
    return load_master_key(path=path)


def shard_sealer(master, version: int):
    def seal(role: str, data: bytes, out: Path, model_id: str) -> dict:
        kid = key_id(model_id, version, role)
        name = f"{role}.v{version}.shard"
        info = encrypt_bytes_to_file(data, out / name, derive_shard_key(master, model_id, version, role), kid)
        return {"file": name, "key_id": kid, **info}

    return seal


def publish(source: str, data_dir: Path, split: int | None = None, loaded=None, weights: str = "float32") -> dict:
    """A first release (version 1) of `source` into data_dir; returns the manifest body.
    `weights="q4_1"` keeps the GGUF's own blocks in the shards (release.prepare)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    body = prepare(source, data_dir, split, version=1, seal=shard_sealer(master_key(data_dir), 1), loaded=loaded,
                   weights=weights)
    write_manifest(data_dir / "model" / "manifest.json", sign_manifest(body, owner_key(data_dir)))
    bless(ROOT, data_dir)
    return body


def rotate(data_dir: Path, retire_old: bool = False) -> dict:
    """Re-encrypts both shards under version + 1 and its new keys, re-signs, re-blesses.

    With `retire_old`, the policy's minimum version becomes the new one, so the broker stops
    releasing the old keys and nodes refuse the old shards.
    """
    master, model_dir = master_key(data_dir), data_dir / "model"
    owner_pub = read_public_key(keys_dir(data_dir) / "owner.pub")
    old = load_manifest(model_dir / "manifest.json", owner_pub)
    new_version = old["version"] + 1
    seal = shard_sealer(master, new_version)
    shards = {}
    for role, entry in old["shards"].items():
        key = derive_shard_key(master, old["model_id"], old["version"], role)
        data = decrypt_to_memory(model_dir / entry["file"], key, key_id=entry["key_id"],
                                 plaintext_sha256=entry["plaintext_sha256"])
        shards[role] = seal(role, data, model_dir, old["model_id"])
        del data
    body = {**old, "version": new_version, "shards": shards}
    write_manifest(model_dir / "manifest.json", sign_manifest(body, owner_key(data_dir)))
    bless(ROOT, data_dir, min_model_version=new_version if retire_old else None)
    for entry in old["shards"].values():
        (model_dir / entry["file"]).unlink(missing_ok=True)
    return body
