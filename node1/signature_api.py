"""node1's verifiable-response routes: GET /v1/signature/{id} (a completion's signed record) and
GET /v1/attestation/report?nonce=HEX (both nodes' evidence and the evidence binding the signing key,
all over the caller's nonce). `python -m client verify-signature` is the other side."""
from flask import Blueprint, jsonify, request

from attestation.binding import RESPONSE_SIGNING, report_data
from node1.attestation_api import evidence_for
from node1.generate import require_loaded
from node1.response_signing import SIGNING_ALGO, ResponseSigner
from shared.http import ApiError, challenge_nonce


def register_signatures(bp: Blueprint, rt, signer: ResponseSigner) -> None:
    @bp.get("/v1/signature/<completion_id>")
    def signature(completion_id: str):
        record = signer.store.get(completion_id)
        if record is None:
            raise ApiError(404, f"no signature for id {completion_id!r}: unknown, or older than the last "
                                f"{signer.store.capacity} completions this node1 process signed")
        return jsonify({"id": record.id, "text": record.text, "signature": record.signature,
                        "signing_key": signer.public_key.hex(), "signing_algo": SIGNING_ALGO})

    @bp.get("/v1/attestation/report")
    def attestation_report():
        nonce = challenge_nonce(request.args.get("nonce", ""))
        return jsonify(signing_report(require_loaded(rt), signer, nonce))


def signing_report(rt, signer: ResponseSigner, nonce: bytes) -> dict:
    """/attestation's evidence of both nodes, plus node1's evidence binding its signing key to the nonce
    under the response-signing purpose (so it vouches for that key and nothing else)."""
    key = signer.public_key.hex()
    signing = {"role": "node1", "public_key": key, "nonce": nonce.hex(), "measurement": rt.identity.measurement,
               "evidence": rt.identity.evidence(report_data(signer.public_key, nonce, purpose=RESPONSE_SIGNING)),
               "model": rt.release.served_by("node1")}
    return {"signing_key": key, "signing_algo": SIGNING_ALGO, "request_nonce": nonce.hex(), "signing": signing,
            **evidence_for(rt, nonce)}
