"""node1's attestation endpoints: GET /attestation (both nodes' evidence bound to a challenger's nonce)
and GET /policy (the signed reference values the challenger checks them against)."""
from flask import Flask, Response, jsonify, request

from node1.generate import require_loaded
from node1.node2_http import Node2Http, Node2Unreachable, json_or_empty
from shared.http import ApiError, challenge_nonce

NODE2_TIMEOUT_S = 10.0


def register_attestation(app: Flask, rt) -> None:
    @app.get("/attestation")
    def attestation():
        nonce = challenge_nonce(request.args.get("nonce", ""))
        return jsonify(evidence_for(require_loaded(rt), nonce))

    @app.get("/policy")
    def policy():
        # As stored, byte for byte: the page and client check the release signature themselves.
        return Response(signed_policy(rt), content_type="application/json", headers={"Cache-Control": "no-store"})


def evidence_for(rt, nonce: bytes) -> dict:
    """node1's evidence and node2's, both bound to the challenger's nonce; the challenger checks both."""
    return {
        "node1": {**rt.identity.evidence_for_nonce(nonce), "model": rt.release.served_by("node1")},
        "node2": node2_evidence(rt.link.url, nonce),
        "node1_verdict_on_node2": rt.link.peer_verdict,
    }


def signed_policy(rt) -> bytes:
    try:
        return (rt.config.tee.data_dir / "policy.json").read_bytes()
    except OSError:
        raise ApiError(503, "no signed policy in the release directory") from None


def node2_evidence(url: str, nonce: bytes) -> dict:
    """node2's own /attestation for the challenger's nonce, relayed as is; the challenger checks it.

    Anyone may ask node1 for this, and whatever answers on node2's address is not trusted before the
    challenger checks it, so it is read as node1 reads node2's other answers (node2_http: at most 1 MiB,
    within the timeout however it is paced, strict JSON). Its own connection for each call: the link's
    is held under the link's lock, and a challenge is rare.
    """
    http = Node2Http(url, NODE2_TIMEOUT_S)
    try:
        status, raw = http.get(f"/attestation?nonce={nonce.hex()}")
    except Node2Unreachable:
        return {"error": "node2 unreachable"}
    finally:
        http.close()
    body = json_or_empty(raw)
    if status != 200 or not body:
        return {"error": f"node2 answered {status}: {body.get('error', 'not a JSON object')}"}
    return body
