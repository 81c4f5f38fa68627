"""node1's attestation endpoints: GET /attestation (both nodes' evidence bound to a challenger's nonce)
and GET /policy (the signed reference values the challenger checks them against)."""
import requests
from flask import Flask, Response, jsonify, request

from node1.generate import require_loaded
from shared.http import ApiError, challenge_nonce

NODE2_TIMEOUT_S = 10.0


def register_attestation(app: Flask, rt) -> None:
    node2 = requests.Session()  # its own pool: the step link's connection is held under the link's lock

    @app.get("/attestation")
    def attestation():
        nonce = challenge_nonce(request.args.get("nonce", ""))
        return jsonify(evidence_for(require_loaded(rt), nonce, node2))

    @app.get("/policy")
    def policy():
        # As stored, byte for byte: the page and client check the release signature themselves.
        return Response(signed_policy(rt), content_type="application/json", headers={"Cache-Control": "no-store"})


def evidence_for(rt, nonce: bytes, node2: requests.Session) -> dict:
    """node1's evidence and node2's, both bound to the challenger's nonce; the challenger checks both."""
    return {
        "node1": {**rt.identity.evidence_for_nonce(nonce), "model": rt.release.served_by("node1")},
        "node2": _node2_evidence(node2, rt.link.url, nonce),
        "node1_verdict_on_node2": rt.link.peer_verdict,
    }


def signed_policy(rt) -> bytes:
    try:
        return (rt.config.tee.data_dir / "policy.json").read_bytes()
    except OSError:
        raise ApiError(503, "no signed policy in the release directory") from None


def _node2_evidence(session: requests.Session, url: str, nonce: bytes) -> dict:
    """node2's own /attestation for the challenger's nonce, relayed as is; the challenger checks it."""
    try:
        r = session.get(f"{url}/attestation", params={"nonce": nonce.hex()}, timeout=NODE2_TIMEOUT_S)
        body = r.json()
    except (requests.RequestException, ValueError):
        return {"error": "node2 unreachable"}
    if r.status_code != 200 or not isinstance(body, dict):
        return {"error": f"node2 answered {r.status_code}: {body.get('error') if isinstance(body, dict) else ''}"}
    return body
