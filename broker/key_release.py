"""The key-release decision: nonce, attestation for the requested role, version policy, then wrap.

Every release, and every refusal of evidence that verified (a relayed or stale binding, a wrong
measurement, a rollback), is appended to the audit log before the answer leaves; if the log cannot
be written, no key is released. Junk is not: a request refused before any evidence verified (not a
key request, no valid nonce, evidence that is malformed or not signed by a platform the policy
trusts) could come from anyone, so it is counted (`count_junk`, a Prometheus counter) rather than
costing an fsynced line each (issue 12).
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from attestation.canonical import hex_field
from attestation.binding import KEY_REQUEST, NONCE_BYTES, report_data
from attestation.service import ApiError
from broker.audit import AuditError, AuditLog
from broker.kms import MasterKey, derive_shard_key
from attestation.key_wrap import wrap_key
from attestation.errors import AttestationError
from attestation.evidence import NODE_ROLES
from attestation.manifest import ManifestError, key_id, load_manifest
from attestation.nonces import NonceError, NonceStore

X25519_KEY_BYTES = 32
# Checks that fail before any evidence verified (the verifier's shape, tee_type and signature come
# before its role, measurement, freshness, debug and report_data checks, which judge genuine evidence).
UNAUTHENTICATED_CHECKS = frozenset({"json", "request", "nonce", "shape", "tee_type", "signature"})

log = logging.getLogger("twintee.broker")

Appraise = Callable[[dict, str, bytes], dict]


class Refusal(ApiError):
    """A key request is refused: `status` is the HTTP code, `check` the check that failed."""

    def __init__(self, status: int, check: str, message: str):
        super().__init__(status, message)
        self.check = check


@dataclass(frozen=True)
class KeyRequest:
    role: str
    model_id: str
    version: int
    public_key: bytes  # the node's fresh X25519 key, raw 32 bytes
    nonce: bytes
    evidence: dict


def _hex_bytes(payload: dict, field: str, size: int) -> bytes:
    raw = hex_field(payload.get(field), size)
    if raw is None:
        raise Refusal(400, "request", f"'{field}' must be {size} bytes of hex")
    return raw


def parse_key_request(payload) -> KeyRequest:
    if not isinstance(payload, dict):
        raise Refusal(400, "request", "body must be a JSON object")
    role, model_id, version = payload.get("role"), payload.get("model_id"), payload.get("version")
    if role not in NODE_ROLES:
        raise Refusal(400, "request", f"'role' must be one of {list(NODE_ROLES)}")
    try:
        key_id(model_id, version, role)
    except ValueError as e:
        raise Refusal(400, "request", str(e)) from None
    if not isinstance(payload.get("evidence"), dict):
        raise Refusal(400, "request", "'evidence' must be a JSON object")
    return KeyRequest(role, model_id, version, _hex_bytes(payload, "public_key", X25519_KEY_BYTES),
                      _hex_bytes(payload, "nonce", NONCE_BYTES), payload["evidence"])


def _untrusted_what(payload) -> dict:
    """What the request asked for, as stated, so even a malformed request leaves a trace."""
    asked = payload if isinstance(payload, dict) else {}
    return {"model_id": asked.get("model_id"), "version": asked.get("version"),
            "role": asked.get("role"), "key_id": None}


class KeyRelease:
    def __init__(self, *, master: MasterKey, owner_public_key: bytes, manifest_file: Path,
                 nonces: NonceStore, appraise: Appraise, min_version_for: Callable[[str], int],
                 audit: AuditLog, count_junk: Callable[[str], None] = lambda check: None):
        self._master, self._owner_key, self._manifest_file = master, owner_public_key, manifest_file
        self._nonces, self._appraise, self._min_version_for = nonces, appraise, min_version_for
        self._audit, self._count_junk = audit, count_junk

    def handle(self, payload, peer: str | None) -> dict:
        """Decide on one POST /key body; returns the answer or raises Refusal (audited, or counted
        as junk), or ApiError 503 when the audit log cannot be written."""
        who = {"role": None, "peer": peer, "measurement": None}
        what = _untrusted_what(payload)
        try:
            req = parse_key_request(payload)
            who["role"] = req.role
            self._consume_nonce(req)
            who["measurement"] = self._attest(req).get("measurement")
            what["key_id"] = self._check_version(req)
            answer = self._wrap(req, what["key_id"])
        except Refusal as r:
            if r.check in UNAUTHENTICATED_CHECKS:
                self._count_junk(r.check)
                log.debug("key request refused as junk: check=%s", r.check)
            else:
                self._record(who, what, "refused", f"{r.check}: {r.message}")
                log.info("key refused: check=%s status=%d", r.check, r.status)
            raise
        self._record(who, what, "released", "ok")
        log.info("key released: key_id=%s", answer["key_id"])
        return answer

    def count_junk(self, check: str) -> None:
        """For refusals before a body reaches `handle` (not JSON at all)."""
        self._count_junk(check)

    def _record(self, who: dict, what: dict, verdict: str, reason: str) -> None:
        try:
            self._audit.append(who=who, what=what, verdict=verdict, reason=reason)
        except AuditError:
            log.error("audit log unavailable; key request not served")
            raise ApiError(503, "audit log unavailable; no key released") from None

    def _consume_nonce(self, req: KeyRequest) -> None:
        try:
            self._nonces.consume(req.nonce)
        except NonceError as e:
            raise Refusal(403, "nonce", f"nonce refused: {e.detail}") from None

    def _attest(self, req: KeyRequest) -> dict:
        """Appraise the evidence for the requested role, bound to this key and this nonce."""
        expected = report_data(req.public_key, req.nonce, purpose=KEY_REQUEST)
        try:
            verdict = self._appraise(req.evidence, req.role, expected)
        except AttestationError as e:
            raise Refusal(403, e.check, f"attestation refused ({e.check}): {e.detail}") from None
        # The appraiser decides; these checks only catch an appraiser that returns nonsense.
        if not isinstance(verdict, dict) or verdict.get("role", req.role) != req.role:
            raise Refusal(403, "role", f"evidence was not appraised as {req.role}")
        return verdict

    def _check_version(self, req: KeyRequest) -> str:
        minimum = self._min_version_for(req.model_id)
        if req.version < minimum:
            raise Refusal(403, "rollback", f"version {req.version} of {req.model_id} is below "
                                           f"the minimum {minimum}")
        try:
            body = load_manifest(self._manifest_file, self._owner_key, min_version=minimum)
        except ManifestError as e:
            raise Refusal(503, "manifest", f"model manifest unavailable ({e.cause})") from None
        if (body["model_id"], body["version"]) != (req.model_id, req.version):
            raise Refusal(404, "version", f"{req.model_id} version {req.version} is not released")
        return body["shards"][req.role]["key_id"]

    def _wrap(self, req: KeyRequest, kid: str) -> dict:
        shard_key = derive_shard_key(self._master, req.model_id, req.version, req.role)
        binding = {"model_id": req.model_id, "version": req.version, "role": req.role}
        try:
            wrapped = wrap_key(shard_key, req.public_key, key_id=kid, **binding)
        except ValueError:  # a low-order X25519 point gives no shared secret
            raise Refusal(400, "public_key", "public_key is not a usable X25519 key") from None
        return {"key_id": kid, **binding, "wrapped": wrapped}
