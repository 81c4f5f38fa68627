"""Appraises both nodes as a relying party: pinned release key -> signed policy -> evidence bound to our nonce."""
import secrets
from dataclasses import dataclass
from pathlib import Path

import requests

from attestation.binding import CLIENT_ATTESTATION, NONCE_BYTES, report_data
from attestation.canonical import json_object
from attestation.errors import PolicyError
from attestation.policy import Policy, load_policy
from attestation.release_dir import release_public_key
from attestation.verify import Verifier
from attestation.evidence import NODE_ROLES



class VerificationFailed(Exception):
    """A node's evidence or the policy failed a check; `check` names it."""

    def __init__(self, role: str, check: str, detail: str):
        super().__init__(f"{role}: {check} failed: {detail}")
        self.role, self.check, self.detail = role, check, detail


@dataclass(frozen=True)
class PinnedPolicy:
    policy: Policy
    release_key: bytes
    source: str  # where the signed document came from; its signature is what we trust, not the source


@dataclass(frozen=True)
class NodeReport:
    role: str
    verdict: dict  # attestation.verify's verdict plus our "model" check
    public_key: bytes
    model: dict

    @property
    def ok(self) -> bool:
        return self.verdict["ok"]


def pinned_policy(release_dir: Path, http: requests.Session, url: str) -> PinnedPolicy:
    """The policy signed by the release key pinned in `release_dir`: the local copy, else node1's /policy."""
    key = release_public_key(Path(release_dir))
    local = Path(release_dir) / "policy.json"
    if local.exists():
        return PinnedPolicy(load_policy(local, key), key, str(local))
    try:
        signed = json_object(http.get(f"{url}/policy", timeout=10).content)
    except requests.RequestException:
        signed = None
    if signed is None:
        raise PolicyError("no local policy.json and node1's /policy is unreachable or not a JSON object")
    return PinnedPolicy(load_policy(signed, key), key, f"{url}/policy")


def fetch_evidence(http: requests.Session, url: str, nonce: bytes) -> dict:
    r = http.get(f"{url}/attestation", params={"nonce": nonce.hex()}, timeout=30)
    if r.status_code != 200:
        raise VerificationFailed("node1", "reachable", f"/attestation answered {r.status_code}")
    body = json_object(r.content)
    if body is None:
        raise VerificationFailed("node1", "reachable", "/attestation's answer is not a JSON object")
    return body


def appraise_node(verifier: Verifier, policy: Policy, role: str, node: dict, nonce: bytes, *,
                  purpose: str = CLIENT_ATTESTATION) -> NodeReport:
    """Checks one node's relayed evidence against the policy and OUR nonce (never the nonce it echoes),
    made for `purpose` (node1's signing key is bound under another: client/verify_signature.py)."""
    if not isinstance(node, dict) or "evidence" not in node:
        reason = node.get("error", "no evidence") if isinstance(node, dict) else "no evidence"
        verdict = {"ok": False, "failed": "reachable", "checks": [{"name": "reachable", "ok": False, "detail": reason}]}
        return NodeReport(role, verdict, b"", {})
    try:
        public_key = bytes.fromhex(node["public_key"])
    except (TypeError, ValueError, KeyError):
        public_key = b""
    verdict = verifier.check(node["evidence"], role, report_data(public_key, nonce, purpose=purpose))
    model = node.get("model") if isinstance(node.get("model"), dict) else {}
    verdict["checks"].append(_model_check(policy, model))
    verdict["ok"] = all(c["ok"] for c in verdict["checks"])
    verdict["failed"] = next((c["name"] for c in verdict["checks"] if not c["ok"]), None)
    return NodeReport(role, verdict, public_key, model)


def _model_check(policy: Policy, model: dict) -> dict:
    """The served model id/version is informational (the measured manifest digest covers it); it must agree."""
    want = policy.model
    ok = model.get("model_id") == want.get("model_id") and isinstance(model.get("version"), int) \
        and model["version"] >= policy.min_model_version
    detail = f"{model.get('model_id')} v{model.get('version')}; policy: {want.get('model_id')} v>={policy.min_model_version}"
    return {"name": "model", "ok": ok, "detail": detail}


def attest(http: requests.Session, url: str, pinned: PinnedPolicy) -> dict:
    """-> {"node1": NodeReport, "node2": NodeReport, "node1_verdict_on_node2": dict | None} for a fresh nonce."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    body = fetch_evidence(http, url, nonce)
    verifier = Verifier(pinned.policy)
    reports = {role: appraise_node(verifier, pinned.policy, role, body.get(role), nonce) for role in NODE_ROLES}
    return {**reports, "node1_verdict_on_node2": body.get("node1_verdict_on_node2")}


def require_verified(reports: dict) -> bytes:
    """-> node1's attested X25519 key, or VerificationFailed naming the first failed check."""
    for role in NODE_ROLES:
        rep = reports[role]
        if not rep.ok:
            failed = rep.verdict["failed"]
            detail = next(c["detail"] for c in rep.verdict["checks"] if c["name"] == failed)
            raise VerificationFailed(role, failed, detail)
    if len(reports["node1"].public_key) != 32:
        raise VerificationFailed("node1", "public_key", "node1's attested key is not an X25519 key")
    return reports["node1"].public_key
