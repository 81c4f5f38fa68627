"""node1's end-to-end sealed surface: fresh attestation of both nodes, the signed policy, and HPKE-sealed generation.

Protocol (the page in webui/sealed.js and the Python client in client/sealed.py speak the other half):
  request   POST /v1/sealed/generate {"enc": hex, "ciphertext": hex}: HPKE base mode (RFC 9180),
            DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, info = INFO, empty aad, sealed to the
            X25519 key node1 attests in /attestation. Plaintext: {"request": <a /generate body>,
            "response_key": 32 bytes hex}.
  response  text/event-stream; event i is `data: hex(nonce || AES-256-GCM(response_key, nonce, payload,
            aad = EVENT_AD || i as 8 bytes))`, where payload is exactly what plain /generate would stream
            (a token event, then the summary or an error), and the last event's payload is "[DONE]".
            The reader counts i itself, so a dropped, reordered or injected event fails to open, and a
            stream that ends before a sealed "[DONE]" was cut short.
"""
import json
import logging
import os

import requests
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask, Response, jsonify, request

from node1.generate import Run, require_ready, sse_events
from node1.request import BadRequest, parse_generate
from node1.text import PromptTooLong
from shared.http import ApiError, challenge_nonce, json_body
from shared.sealed_protocol import ENC_BYTES, INFO, KEY_BYTES, NONCE_BYTES, SUITE, event_ad

log = logging.getLogger("twintee.node1.sealed")

NODE2_TIMEOUT_S = 10.0


class SealedRequestError(ValueError):
    """A sealed request could not be decoded or opened (-> 400 naming which part)."""


def open_request(body, private_key) -> tuple[dict, bytes]:
    """{"enc", "ciphertext"} -> (the inner /generate body, the response key), or SealedRequestError."""
    if not isinstance(body, dict):
        raise SealedRequestError("the body must be a JSON object with 'enc' and 'ciphertext'")
    enc, ciphertext = _hex_field(body, "enc"), _hex_field(body, "ciphertext")
    if len(enc) != ENC_BYTES:
        raise SealedRequestError(f"'enc' must be {ENC_BYTES} bytes (an X25519 public key)")
    try:
        plain = SUITE.decrypt(enc + ciphertext, private_key, info=INFO)
    except (InvalidTag, ValueError):
        raise SealedRequestError("the sealed request does not open with node1's attested key") from None
    try:
        inner = json.loads(plain)
        key = bytes.fromhex(inner["response_key"])
        req = inner["request"]
    except (ValueError, TypeError, KeyError):
        raise SealedRequestError("the opened request must be {\"request\": {...}, \"response_key\": hex}") from None
    if len(key) != KEY_BYTES or not isinstance(req, dict):
        raise SealedRequestError(f"'response_key' must be {KEY_BYTES} bytes and 'request' an object")
    return req, key


def _hex_field(body: dict, name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str):
        raise SealedRequestError(f"'{name}' must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise SealedRequestError(f"'{name}' is not valid hex") from None


def seal_event(key: bytes, index: int, payload: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + AESGCM(key).encrypt(nonce, payload.encode(), event_ad(index))
    return f"data: {sealed.hex()}\n\n"


def seal_stream(events, key: bytes):
    """Seals each plain SSE event (`data: PAYLOAD\\n\\n`, as sse_events yields them) in order."""
    for index, event in enumerate(events):
        yield seal_event(key, index, event.removeprefix("data: ").removesuffix("\n\n"))


def register_sealed(app: Flask, rt) -> None:
    api = SealedApi(rt)
    app.add_url_rule("/attestation", "attestation", api.attestation, methods=["GET"])
    app.add_url_rule("/policy", "policy", api.policy, methods=["GET"])
    app.add_url_rule("/v1/sealed/generate", "sealed_generate", api.generate, methods=["POST"])


class SealedApi:
    def __init__(self, rt):
        self.rt = rt
        self.node2 = requests.Session()  # its own pool: the step link's session is held under the link's lock

    def attestation(self):
        """node1's evidence and node2's, both bound to the challenger's nonce; the challenger checks both."""
        nonce = challenge_nonce(request.args.get("nonce", ""))
        r = _loaded(self.rt)
        return jsonify({
            "node1": {**r.identity.evidence_for_nonce(nonce), "model": r.release.served_by("node1")},
            "node2": _node2_evidence(self.node2, r.link.url, nonce),
            "node1_verdict_on_node2": r.link.peer_verdict,
        })

    def policy(self):
        # As stored, byte for byte: the page and client check the release signature themselves.
        try:
            raw = (self.rt.config.tee.data_dir / "policy.json").read_bytes()
        except OSError:
            raise ApiError(503, "no signed policy in the release directory") from None
        return Response(raw, content_type="application/json", headers={"Cache-Control": "no-store"})

    def generate(self):
        config = self.rt.config
        body = json_body(request, config.max_body_bytes)
        r = _loaded(self.rt)
        try:
            inner, key = open_request(body, r.identity.key)
            req = parse_generate({**inner, "stream": True}, config.model.max_new_tokens)
            prompt_ids = require_ready(r).codec.encode_chat(req.messages, config.model.max_input_tokens)
        except SealedRequestError as exc:
            raise ApiError(400, str(exc)) from None
        except (BadRequest, PromptTooLong) as exc:
            raise ApiError(400, f"inner request: {exc}") from None
        run = Run(r, req, prompt_ids)
        log.info("sealed generate session=%s sealed_bytes=%d prompt_tokens=%d max_tokens=%d",
                 run.gen.id[:8], len(body["ciphertext"]) // 2, len(prompt_ids), req.max_tokens)
        return Response(seal_stream(sse_events(run), key), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store"})


def _loaded(rt):
    """The runtime once its identity and release are loaded (attestation needs no link to node2)."""
    if rt.state != "ready":
        raise ApiError(503, f"node1 is not ready: {rt.reason}")
    return rt


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
