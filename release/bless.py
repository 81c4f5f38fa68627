"""The explicit blessing step (never implicit): release key, simulated platform, reference values, signed policy."""
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from attestation.canonical import canonical_json
from attestation.evidence import TEE_TYPES
from attestation.policy import POLICY_VERSION, Policy, default_tdx, sign_policy
from attestation.providers.simulated import init_simulated_platform, load_private_key, write_private_file
from attestation.release_dir import (POLICY_FILE, RELEASE_KEY, RELEASE_PUB, SIMULATED_DIR, previous_policy,
                                     read_manifest, reference_measurements)


def ensure_release_key(data_dir: Path) -> Ed25519PrivateKey:
    key_path, pub_path = Path(data_dir) / RELEASE_KEY, Path(data_dir) / RELEASE_PUB
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not key_path.exists():
        write_private_file(key_path, Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    key = load_private_key(key_path)
    if not pub_path.exists():
        pub_path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return key


def bless(project_root: Path, data_dir: Path, *, min_model_version: int | None = None,
          allowed_tee_types: tuple | None = None, tdx: dict | None = None) -> Policy:
    """Measures every role and writes the signed `data_dir/policy.json`; returns the policy.

    Settings not given are kept from the current policy (an operator's MRTD pins survive a re-bless);
    a first blessing allows every TEE kind and sets the minimum model version to the manifest's.
    """
    data_dir = Path(data_dir)
    key = ensure_release_key(data_dir)
    root_public = init_simulated_platform(data_dir / SIMULATED_DIR)  # idempotent: keeps existing keys
    manifest_sha, body = read_manifest(data_dir)
    refs = reference_measurements(project_root, manifest_sha, body)
    old = previous_policy(data_dir)
    policy = Policy(
        version=POLICY_VERSION, created_at=time.time(),
        allowed_tee_types=tuple(allowed_tee_types or (old.allowed_tee_types if old else TEE_TYPES)),
        roles={r: {"measurement": m["measurement"], "components": m["components"]} for r, m in refs.items()},
        simulated_root_public_key=root_public.hex(),
        tdx=tdx or (old.to_dict()["tdx"] if old else default_tdx()),
        model={"model_id": body["model_id"], "version": body["version"]},
        min_model_version=_min_version(min_model_version, old, body["version"]),
    )
    target = data_dir / POLICY_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_bytes(canonical_json(sign_policy(policy, key)))
    os.replace(tmp, target)  # readers never see a half-written policy
    return policy


def _min_version(requested: int | None, old: Policy | None, manifest_version: int) -> int:
    if requested is not None:
        return requested
    # A re-bless keeps the floor: re-blessing a rolled-back manifest must not re-admit it.
    return old.min_model_version if old else manifest_version
