"""node1's HTTP surface: POST /generate, /health, /metrics and the web page; the attestation and
sealed endpoints register themselves (node1/attestation_api.py, node1/sealed.py)."""
import logging
from pathlib import Path

from flask import Flask, Response, jsonify, request, send_from_directory

from node1.attestation_api import register_attestation
from node1.auth import Gate, install_gate
from node1.config import Node1Config
from node1.generate import complete, event_payloads, sse, start_run
from node1.request import BadRequest
from node1.openai_api import openai_blueprint
from node1.runtime import Node1Runtime
from node1.scheduler import GenerationFailed
from node1.sealed import register_sealed
from node1.text import PromptTooLong
from attestation.service import ApiError, install_error_handlers, install_metrics
from shared.http import json_body

log = logging.getLogger("twintee.node1")
WEBUI = Path(__file__).resolve().parents[1] / "webui"
NO_STORE = {"Cache-Control": "no-store"}


def create_app(config: Node1Config, *, runtime: Node1Runtime | None = None, gate: Gate | None = None) -> Flask:
    app = Flask(__name__)
    rt = runtime or Node1Runtime(config).start()
    app.extensions["twintee"] = rt
    install_error_handlers(app)
    install_gate(app, gate or Gate.open(config, rt), config.max_body_bytes)  # keys, quotas, the usage ledger
    install_metrics(app, rt.metrics, refresh=rt.refresh_gauges)
    register_attestation(app, rt)
    register_sealed(app, rt)
    app.register_blueprint(openai_blueprint(config, rt))

    @app.get("/health")
    def health():
        body, status = rt.health()
        return jsonify(body), status

    @app.post("/generate")
    def generate():
        body = json_body(request, config.max_body_bytes)
        try:
            run = start_run(rt, body, config.model)
        except (BadRequest, PromptTooLong) as exc:
            raise ApiError(400, str(exc)) from None
        log.info("generate session=%s prompt_tokens=%d max_tokens=%d stream=%s",
                 run.gen.id[:8], len(run.prompt_ids), run.req.max_tokens, run.req.stream)
        if run.req.stream:
            return Response(sse(event_payloads(run)), mimetype="text/event-stream", headers=NO_STORE)
        try:
            return jsonify(complete(run))
        except GenerationFailed as exc:
            raise ApiError(exc.status, str(exc)) from None

    @app.get("/")
    def index():
        return send_from_directory(WEBUI, "index.html")

    @app.get("/webui/<path:name>")
    def webui(name: str):
        return send_from_directory(WEBUI, name)

    return app
