"""The release directory's layout and what the nodes, the broker and the CLIs read from it: where the
manifest, the signed policy and the release public key live, and the reference measurements."""
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from attestation.errors import MeasureError, PolicyError
from attestation.evidence import ROLES
from attestation.measure import measure_node
from attestation.policy import Policy, load_policy

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
