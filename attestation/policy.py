"""The signed appraisal policy: which TEEs are allowed and the blessed reference values for each role."""
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.errors import PolicyError
from attestation.canonical import canonical_json, hex_field
from attestation.evidence import COMPONENTS, ROLES, TEE_TYPES

POLICY_VERSION = 1
TCB_STATUSES = (  # best first, as dcap-qvl names them
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked",
)
RTMR_NAMES = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")
MAX_POLICY_BYTES = 1 << 20


def default_tdx() -> dict:
    return {"min_tcb_status": "UpToDate", "allowed_mrtd": [], "allowed_rtmrs": {}, "rejected_advisory_ids": []}


def _freeze(value):
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Policy:
    """Reference values (RFC 9334): nested mappings are frozen so a loaded policy cannot drift."""

    version: int
    created_at: float
    allowed_tee_types: tuple
    roles: Mapping  # {role: {"measurement": hex, "components": {"code", "manifest", "config"}}}
    simulated_root_public_key: str  # hex of the raw Ed25519 key; "" when no simulated TEE is blessed
    max_evidence_age_s: float = 300.0
    tdx: Mapping = field(default_factory=default_tdx)
    model: Mapping = field(default_factory=dict)  # {"model_id": str, "version": int}
    min_model_version: int = 0

    def __post_init__(self):
        for name in ("allowed_tee_types", "roles", "tdx", "model"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))
        _check_shape(self)

    def to_dict(self) -> dict:
        return {f.name: _thaw(getattr(self, f.name)) for f in fields(self)}

    def production(self) -> "Policy":
        """The same reference values with the simulated TEE refused: only hardware evidence passes."""
        return replace(self, allowed_tee_types=tuple(t for t in self.allowed_tee_types if t != "simulated"))


def _is_hex(value, nbytes: int) -> bool:
    return hex_field(value, nbytes) is not None


def _check_shape(p: Policy) -> None:
    if p.version != POLICY_VERSION:
        raise PolicyError(f"unsupported policy version {p.version!r}")
    if not p.allowed_tee_types or not set(p.allowed_tee_types) <= set(TEE_TYPES):
        raise PolicyError(f"allowed_tee_types must be a non-empty subset of {list(TEE_TYPES)}")
    if not isinstance(p.max_evidence_age_s, (int, float)) or not 0 < p.max_evidence_age_s <= 86400:
        raise PolicyError("max_evidence_age_s must be between 0 and 86400 seconds")
    if not isinstance(p.created_at, (int, float)) or not isinstance(p.min_model_version, int):
        raise PolicyError("created_at must be a number and min_model_version an integer")
    for role, ref in p.roles.items():
        if role not in ROLES or not isinstance(ref, Mapping) or not _is_hex(ref.get("measurement"), 32):
            raise PolicyError(f"role {role!r} needs a 32-byte hex measurement")
        comps = ref.get("components")
        if not isinstance(comps, Mapping) or set(comps) != set(COMPONENTS) or not all(_is_hex(c, 32) for c in comps.values()):
            raise PolicyError(f"role {role!r} needs components {list(COMPONENTS)} as 32-byte hex")
    if p.simulated_root_public_key and not _is_hex(p.simulated_root_public_key, 32):
        raise PolicyError("simulated_root_public_key must be 32 bytes of hex")
    _check_tdx(p.tdx)


def _check_tdx(tdx: Mapping) -> None:
    if set(tdx) != set(default_tdx()):
        raise PolicyError(f"tdx must have exactly {sorted(default_tdx())}")
    if tdx["min_tcb_status"] not in TCB_STATUSES[:-1]:
        raise PolicyError(f"tdx.min_tcb_status must be one of {list(TCB_STATUSES[:-1])}")
    if not all(_is_hex(m, 48) for m in tdx["allowed_mrtd"]):
        raise PolicyError("tdx.allowed_mrtd must list 48-byte hex values")
    rtmrs = tdx["allowed_rtmrs"]
    if not isinstance(rtmrs, Mapping) or not set(rtmrs) <= set(RTMR_NAMES):
        raise PolicyError(f"tdx.allowed_rtmrs keys must be among {list(RTMR_NAMES)}")
    if not all(_is_hex(v, 48) for values in rtmrs.values() for v in values):
        raise PolicyError("tdx.allowed_rtmrs must list 48-byte hex values")


def sign_policy(policy: Policy, release_private_key: Ed25519PrivateKey) -> dict:
    """-> {"body", "signature", "public_key"}: the release key signs the canonical JSON of the body."""
    body = policy.to_dict()
    public = release_private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"body": body, "signature": release_private_key.sign(canonical_json(body)).hex(), "public_key": public.hex()}


def load_policy(path_or_dict, release_public_key: bytes) -> Policy:
    """Reads a signed policy, checks it against the pinned release key, and returns it; else PolicyError."""
    signed = _read(path_or_dict)
    if not isinstance(signed, dict) or not isinstance(signed.get("body"), dict):
        raise PolicyError("a signed policy is an object with a 'body' object")
    try:
        signature = hex_field(signed.get("signature"), 64)
        if signature is None:
            raise InvalidSignature
        Ed25519PublicKey.from_public_bytes(release_public_key).verify(signature, canonical_json(signed["body"]))
    except (ValueError, TypeError, InvalidSignature):
        raise PolicyError("policy signature does not verify against the pinned release key") from None
    body = signed["body"]
    names = {f.name for f in fields(Policy)}
    if set(body) != names:
        raise PolicyError(f"policy body fields differ: missing {sorted(names - set(body))}, extra {sorted(set(body) - names)}")
    try:
        return Policy(**body)
    except (TypeError, ValueError, AttributeError) as e:
        raise PolicyError(f"malformed policy body: {type(e).__name__}") from None


def _read(path_or_dict):
    if isinstance(path_or_dict, dict):
        return path_or_dict
    path = Path(path_or_dict)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PolicyError(f"cannot read policy {path}: {e.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError("policy file is too large")
    try:
        return json.loads(raw)
    except ValueError:
        raise PolicyError(f"policy {path} is not JSON") from None
