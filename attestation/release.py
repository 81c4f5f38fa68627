"""The explicit blessing step (never implicit): release key, simulated platform, reference values, signed policy."""
import hashlib
import json
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding, NoEncryption, PrivateFormat, PublicFormat, load_pem_public_key)

from attestation.errors import MeasureError, PolicyError
from attestation.evidence import ROLES, TEE_TYPES, canonical_json
from attestation.measure import measure_node
from attestation.policy import POLICY_VERSION, Policy, default_tdx, load_policy, sign_policy
from attestation.providers.simulated import init_simulated_platform, load_private_key, write_private_file

RELEASE_KEY = Path("keys") / "release.key"
RELEASE_PUB = Path("keys") / "release.pub"
SIMULATED_DIR = "simulated-tee"
POLICY_FILE = "policy.json"
MANIFEST = Path("model") / "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20


def security_config(role: str, manifest_body: dict) -> dict:
    """What a role's config digest covers; a node measuring itself at start-up must use the same dict."""
    if role == "broker":
        return {"role": "broker"}
    return {"role": role, "split_layer": manifest_body["split_layer"], "model_id": manifest_body["model_id"]}


def read_manifest(data_dir: Path) -> tuple[str, dict]:
    """-> (sha256 of the manifest file's bytes, its body), or MeasureError."""
    path = Path(data_dir) / MANIFEST
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MeasureError(f"cannot read model manifest {path}: {e.strerror}; run `make prepare`") from None
    try:
        body = json.loads(raw)["body"] if len(raw) <= MAX_MANIFEST_BYTES else None
        ok = isinstance(body, dict) and isinstance(body.get("model_id"), str) and \
            isinstance(body.get("version"), int) and isinstance(body.get("split_layer"), int)
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise MeasureError(f"{path} needs a body with model_id (str), version (int) and split_layer (int)")
    return hashlib.sha256(raw).hexdigest(), body


def reference_measurements(project_root: Path, manifest_sha: str, manifest_body: dict) -> dict:
    """{role: measure_node(...)} for every role, from this checkout and one read of the manifest."""
    return {role: measure_node(project_root, role, manifest_sha, security_config(role, manifest_body)) for role in ROLES}


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


def release_public_key(data_dir_or_file: Path) -> bytes:
    """The raw release public key from `data_dir/keys/release.pub` (or that file itself)."""
    path = Path(data_dir_or_file)
    path = path / RELEASE_PUB if path.is_dir() else path
    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise PolicyError(f"cannot load release public key {path}: {type(e).__name__}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PolicyError(f"{path} is not an Ed25519 public key")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def previous_policy(data_dir: Path) -> Policy | None:
    """The policy currently in `data_dir`, if it verifies under the release key; else None."""
    try:
        return load_policy(Path(data_dir) / POLICY_FILE, release_public_key(data_dir))
    except PolicyError:
        return None


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
