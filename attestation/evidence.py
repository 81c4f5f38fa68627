"""The evidence envelope every attester produces and every verifier reads: fields, encoding and shape checks."""
import hashlib
import math

from attestation.canonical import hex_field
from attestation.errors import EvidenceError

# An envelope is a JSON-serialisable dict:
#   {"version": 1, "tee_type": "simulated"|"tdx"|"sev-snp"|"dstack", "role": "node1"|"node2"|"broker",
#    "measurement": hex32, "components": {"code": hex32, "manifest": hex32, "config": hex32},
#    "report_data": hex64, "issued_at": unix float, "debug": bool, ...provider fields}
# Provider fields: simulated -> "platform_certificate", "signature"; tdx -> "quote"; sev-snp -> "report";
# dstack -> "quote", "event_log". Evidence never carries prompt or output data: the key set is closed.

VERSION = 1
TEE_TYPES = ("simulated", "tdx", "sev-snp", "dstack")
NODE_ROLES = ("node1", "node2")  # the two halves of the model: shards, channels, clients' checks
ROLES = (*NODE_ROLES, "broker")  # everything that attests
COMPONENTS = ("code", "manifest", "config")
REPORT_DATA_BYTES = 64
BODY_FIELDS = ("version", "tee_type", "role", "measurement", "components", "report_data", "issued_at", "debug")
PROVIDER_FIELDS = {
    "simulated": ("platform_certificate", "signature"),
    "tdx": ("quote",),
    "sev-snp": ("report",),
    "dstack": ("quote", "event_log"),
}
# Hardware quotes carry 64 bytes of their own; this tag binds role and measurement into them too.
HARDWARE_BINDING_TAG = b"twintee/hardware-report-data/v1"
MAX_QUOTE_HEX = 2 * 64 * 1024  # real TDX quotes are ~5 KB; refuse anything absurd before parsing



def make_body(tee_type: str, measurement: dict, report_data: bytes, issued_at: float, debug: bool) -> dict:
    """The provider-independent part of an envelope, from a `measure_node` result."""
    if len(report_data) != REPORT_DATA_BYTES:
        raise ValueError(f"report_data must be {REPORT_DATA_BYTES} bytes, got {len(report_data)}")
    return {
        "version": VERSION, "tee_type": tee_type, "role": measurement["role"],
        "measurement": measurement["measurement"], "components": dict(measurement["components"]),
        "report_data": report_data.hex(), "issued_at": float(issued_at), "debug": bool(debug),
    }


def body_of(evidence: dict) -> dict:
    return {k: evidence[k] for k in BODY_FIELDS}


def hardware_report_data(report_data: bytes, role: str, measurement: str) -> bytes:
    """SHA-512(tag || role || measurement || report_data), length-prefixed: what a hardware quote carries.

    Without it a quote from the right image could be relabelled as another role or measurement.
    """
    h = hashlib.sha512(HARDWARE_BINDING_TAG)
    # `measurement` comes from evidence that validate() passed, or from our own measure_node.
    for part in (role.encode(), hex_bytes(measurement, 32, "measurement"), report_data):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def hex_bytes(value, nbytes: int | None, name: str, max_hex: int = MAX_QUOTE_HEX) -> bytes:
    """Decodes a hex field from outside, or raises EvidenceError naming it."""
    if not isinstance(value, str) or len(value) > max_hex:
        raise EvidenceError(f"{name} must be a hex string")
    raw = hex_field(value)
    if raw is None:
        raise EvidenceError(f"{name} is not valid hex")
    if nbytes is not None and len(raw) != nbytes:
        raise EvidenceError(f"{name} must be {nbytes} bytes, got {len(raw)}")
    return raw


def validate(evidence) -> dict:
    """Checks the envelope's shape and types; returns it unchanged or raises EvidenceError."""
    if not isinstance(evidence, dict):
        raise EvidenceError("evidence must be a JSON object")
    tee_type = evidence.get("tee_type")
    if tee_type not in TEE_TYPES:
        raise EvidenceError(f"unknown tee_type {tee_type!r}")
    expected = set(BODY_FIELDS) | set(PROVIDER_FIELDS[tee_type])
    if set(evidence) != expected:
        raise EvidenceError(f"fields differ from the {tee_type} envelope: "
                            f"missing {sorted(expected - set(evidence))}, extra {sorted(set(evidence) - expected)}")
    _validate_body(evidence)
    return evidence


def _validate_body(ev: dict) -> None:
    if ev["version"] != VERSION or isinstance(ev["version"], bool):
        raise EvidenceError(f"unsupported evidence version {ev['version']!r}")
    if ev["role"] not in ROLES:
        raise EvidenceError(f"unknown role {ev['role']!r}")
    hex_bytes(ev["measurement"], 32, "measurement")
    comps = ev["components"]
    if not isinstance(comps, dict) or set(comps) != set(COMPONENTS):
        raise EvidenceError(f"components must have exactly {list(COMPONENTS)}")
    for name in COMPONENTS:
        hex_bytes(comps[name], 32, f"components.{name}")
    hex_bytes(ev["report_data"], REPORT_DATA_BYTES, "report_data")
    issued = ev["issued_at"]
    if isinstance(issued, bool) or not isinstance(issued, (int, float)) or not math.isfinite(issued):
        raise EvidenceError("issued_at must be a finite number")
    if not isinstance(ev["debug"], bool):
        raise EvidenceError("debug must be a boolean")
