"""The explicit blessing step (never implicit): release key, simulated platform, reference values, signed policy."""
import time
from pathlib import Path

from attestation.canonical import canonical_json
from attestation.evidence import TEE_TYPES
from attestation.policy import POLICY_VERSION, Policy, default_tdx, sign_policy
from attestation.files import PUBLIC, ensure_ed25519_key, write_atomic
from attestation.providers.simulated import init_simulated_platform
from attestation.release_dir import (POLICY_FILE, RELEASE_KEY, RELEASE_PUB, SIMULATED_DIR, previous_policy,
                                     read_manifest, reference_measurements)


def bless(project_root: Path, data_dir: Path, *, min_model_version: int | None = None,
          allowed_tee_types: tuple | None = None, tdx: dict | None = None) -> Policy:
    """Measures every role and writes the signed `data_dir/policy.json`; returns the policy.

    Settings not given are kept from the current policy (an operator's MRTD pins survive a re-bless);
    a first blessing allows every TEE kind and sets the minimum model version to the manifest's.
    """
    data_dir = Path(data_dir)
    key = ensure_ed25519_key(data_dir / RELEASE_KEY, data_dir / RELEASE_PUB)
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
    # Readers never see a half-written policy, and a crash never leaves one; the nodes serve it publicly.
    write_atomic(data_dir / POLICY_FILE, canonical_json(sign_policy(policy, key)), mode=PUBLIC)
    return policy


def _min_version(requested: int | None, old: Policy | None, manifest_version: int) -> int:
    if requested is not None:
        return requested
    # A re-bless keeps the floor: re-blessing a rolled-back manifest must not re-admit it.
    return old.min_model_version if old else manifest_version
