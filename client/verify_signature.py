"""`python -m client verify-signature`: did the attested node1 sign exactly these request and response bytes?

Good only when all of these hold: the files' SHA-256 are the hashes node1's record names, its Ed25519
signature over "<request sha256>:<response sha256>" (computed from the files, never taken from the
record) verifies under the record's key, node1's evidence over OUR fresh nonce binds that very key
under the response-signing purpose, and that evidence verifies against the pinned release.
"""
import hashlib
import secrets
from dataclasses import dataclass, field

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.binding import NONCE_BYTES, RESPONSE_SIGNING
from attestation.canonical import hex_field, json_object
from attestation.verify import Verifier
from client.attest import NodeReport, PinnedPolicy, appraise_node

SIGNING_ALGO = "ed25519"
TIMEOUT_S = 30


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SignatureVerdict:
    """Every check in order; `signing` is node1's appraised evidence for the key, `node2` for information."""

    checks: list[Check] = field(default_factory=list)
    signing: NodeReport | None = None
    node2: NodeReport | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_signature(http: requests.Session, url: str, completion_id: str, request_bytes: bytes,
                     response_bytes: bytes, pinned: PinnedPolicy) -> SignatureVerdict:
    v = SignatureVerdict()
    record = _get_json(http, f"{url}/v1/signature/{completion_id}", {})
    if not v.add("record", isinstance(record.get("text"), str), _record_detail(record, completion_id)):
        return v
    key = hex_field(record.get("signing_key"), 32)
    if not v.add("signing_algo", record.get("signing_algo") == SIGNING_ALGO and key is not None,
                 f"{record.get('signing_algo')} with a {'32-byte' if key else 'malformed'} key"):
        return v
    text = f"{sha256_hex(request_bytes)}:{sha256_hex(response_bytes)}"
    _hash_checks(v, record["text"], text)
    good = _signature_ok(key, record.get("signature"), text)
    v.add("signature", good, f"Ed25519 over the files' hashes {'holds' if good else 'does not hold'} under "
          f"node1's key {key.hex()[:16]}…")
    _binding_checks(v, http, url, key, pinned)
    return v


def _hash_checks(v: SignatureVerdict, signed: str, computed: str) -> None:
    signed_req, _, signed_resp = signed.partition(":")
    req, _, resp = computed.partition(":")
    v.add("request hash", signed_req == req, f"the request file's SHA-256 {req[:16]}… "
          + ("is the signed one" if signed_req == req else f"is not the signed {signed_req[:16]}…"))
    v.add("response hash", signed_resp == resp, f"the response file's SHA-256 {resp[:16]}… "
          + ("is the signed one" if signed_resp == resp else f"is not the signed {signed_resp[:16]}…"))


def _signature_ok(key: bytes, signature, text: str) -> bool:
    sig = hex_field(signature, 64)
    if sig is None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, text.encode())
    except InvalidSignature:
        return False
    return True


def _binding_checks(v: SignatureVerdict, http, url: str, key: bytes, pinned: PinnedPolicy) -> None:
    """node1's evidence over our fresh nonce must bind the record's key (never the key the report names)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    report = _get_json(http, f"{url}/v1/attestation/report", {"nonce": nonce.hex()})
    signing = report.get("signing")
    if not isinstance(signing, dict):
        signing = {"error": report.get("error", "the report carries no evidence for the signing key")}
    verifier = Verifier(pinned.policy)
    v.signing = appraise_node(verifier, pinned.policy, "node1", {**signing, "public_key": key.hex()}, nonce,
                              purpose=RESPONSE_SIGNING)
    if "node2" in report:
        v.node2 = appraise_node(verifier, pinned.policy, "node2", report["node2"], nonce)
    failed = v.signing.verdict["failed"]
    detail = next((c["detail"] for c in v.signing.verdict["checks"] if c["name"] == failed), "")
    v.add("key binding", v.signing.ok,
          f"node1's fresh evidence (our nonce {nonce.hex()[:16]}…) binds this key for response signing and "
          "verifies against the pinned release" if v.signing.ok else f"node1's evidence: {failed} failed: {detail}")


def _get_json(http, url: str, params: dict) -> dict:
    """A JSON object from node1, or {"error": why}: each caller names the check that failed."""
    try:
        r = http.get(url, params=params, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        return {"error": f"{type(exc).__name__}"}
    body = json_object(r.content)
    if body is None:
        return {"error": "not a JSON object"}
    if r.status_code != 200:
        err = body.get("error")
        return {"error": f"{r.status_code} {err.get('message') if isinstance(err, dict) else err}"}
    return body


def _record_detail(record: dict, completion_id: str) -> str:
    if not isinstance(record.get("text"), str):
        return f"node1 has no signed record for {completion_id}: {record.get('error', 'malformed record')}"
    signed_req, _, signed_resp = record["text"].partition(":")
    return f"node1 signed {completion_id} as {signed_req[:16]}…:{signed_resp[:16]}…"
