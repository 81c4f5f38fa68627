"""node1's OpenAI-compatible routes (GET /v1/models, POST /v1/chat/completions, POST /v1/completions):
thin adapters over the /generate pipeline, with every error in OpenAI's shape; and GET /openapi.json."""
import json
import logging

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from node1 import openai_shapes as shapes
from node1.config import Node1Config
from node1.generate import require_ready, sse
from node1.openai_choices import Choices
from node1.openai_request import (
    InvalidRequest,
    ModelNotFound,
    OpenAIRequest,
    parse_chat,
    parse_text,
)
from node1.openai_sealed import sealed_reply
from node1.openapi import openapi
from node1.response_signing import ResponseSigner, signed_body
from node1.scheduler import GenerationFailed
from node1.signature_api import register_signatures
from node1.text import PromptTooLong
from shared.http import ApiError, json_body

log = logging.getLogger("twintee.node1.openai")


def openai_blueprint(config: Node1Config, rt) -> Blueprint:
    bp = Blueprint("openai", __name__)
    install_openai_errors(bp)
    server = OpenAIServer(config, rt)
    signer = ResponseSigner(config.signature_records)  # made here, at start; lives as long as the process
    register_signatures(bp, rt, signer)  # GET /v1/signature/{id}, GET /v1/attestation/report

    @bp.get("/v1/models")
    def models():
        return jsonify(server.models())

    @bp.get("/openapi.json")
    def openapi_json():
        return jsonify(openapi(config, getattr(rt.release, "model_id", None)))

    @bp.post("/v1/chat/completions")
    def chat_completions():
        body, raw = signed_body(request, config.max_body_bytes)
        return signer.signed(raw, server.serve(parse_chat, body))

    @bp.post("/v1/completions")
    def completions():
        body, raw = signed_body(request, config.max_body_bytes)
        return signer.signed(raw, server.serve(parse_text, body))

    @bp.post("/v1/sealed/openai")
    def sealed_openai():
        body = json_body(request, config.max_body_bytes)
        gate = current_app.extensions["twintee_gate"]
        return Response(sealed_reply(server, body, require_ready(rt).identity.key, gate), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store"})

    return bp


class OpenAIServer:
    """Serves one parsed OpenAI request from the runtime: the work behind the routes, plain or sealed."""

    ROUTES = {("GET", "/v1/models"): None, ("POST", "/v1/chat/completions"): parse_chat,
              ("POST", "/v1/completions"): parse_text}

    def __init__(self, config: Node1Config, rt):
        self.config, self.rt = config, rt

    def call(self, method: str, path: str, body) -> Response:
        """One request as the plain routes would answer it, errors included (the sealed route's inner call)."""
        try:
            if (method, path) not in self.ROUTES:
                raise ApiError(404, f"no OpenAI route {method} {path} here")
            parse = self.ROUTES[(method, path)]
            return jsonify(self.models()) if parse is None else self.serve(parse, body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes OpenAI's error reply, as on the plain routes
            err, status, headers = error_reply(exc)
            return Response(json.dumps(err), status=status, headers=headers, mimetype="application/json")

    def models(self) -> dict:
        r = require_ready(self.rt)
        created = r.release.manifest.get("created_at")
        return shapes.models(r.release.model_id, created if isinstance(created, int) else 0)

    def serve(self, parse, body) -> Response:
        r = require_ready(self.rt)
        req = parse(body, self.config.model.max_new_tokens, r.release.model_id)
        choices = Choices(r, req, self._prompt_ids(r, req), r.release.model_id)
        log.info("openai %s n=%d prompt_tokens=%d max_tokens=%d stream=%s logprobs=%s", req.kind, req.n,
                 len(choices.prompt_ids), req.max_tokens, req.stream, req.sampling.logprobs)
        try:
            if req.stream:
                payloads = choices.stream()
                resp = Response(sse(payloads), mimetype="text/event-stream", headers={"Cache-Control": "no-store"})
                resp.payloads = payloads  # what the sealed route seals, event by event
                resp.usage_of = choices.usage  # what the ledger bills, with or without include_usage
                return resp
            return jsonify(choices.complete())
        except GenerationFailed as exc:  # before any byte went out: a plain error reply, never a 200
            raise ApiError(502, str(exc)) from None

    def _prompt_ids(self, r, req: OpenAIRequest) -> list[int]:
        limit = self.config.model.max_input_tokens
        try:
            if req.kind == "chat":
                return r.codec.encode_chat(req.messages, limit)
            ids = list(r.codec.tok(req.prompt, add_special_tokens=True)["input_ids"])  # no template
            if len(ids) > limit:
                raise PromptTooLong(f"the prompt is {len(ids)} tokens; the maximum input length is {limit}")
            return ids
        except PromptTooLong as exc:
            raise InvalidRequest(str(exc), "messages" if req.kind == "chat" else "prompt",
                                 "context_length_exceeded") from None


def error_reply(exc: Exception) -> tuple[dict, int, dict]:
    """Any failure of an OpenAI request -> (OpenAI's error body, status, headers)."""
    if isinstance(exc, InvalidRequest):
        status = 404 if isinstance(exc, ModelNotFound) else 400
        return shapes.error(status, str(exc), exc.param, exc.code), status, {}
    if isinstance(exc, ApiError):
        return shapes.error(exc.status, exc.message), exc.status, exc.headers
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        return shapes.error(status, "malformed request" if status == 400 else exc.name.lower()), status, {}
    log.error("unhandled %s", type(exc).__name__)  # the type only: messages may hold content
    return shapes.error(500, "internal error"), 500, {}


def install_openai_errors(bp: Blueprint) -> None:
    """Every failure of these routes as {"error": {message, type, param, code}}; the other routes keep
    shared/http.py's {"error": message}."""

    @bp.errorhandler(Exception)
    def _any(exc: Exception):
        body, status, headers = error_reply(exc)
        return jsonify(body), status, headers
