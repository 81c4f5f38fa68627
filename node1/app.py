"""node1's HTTP surface: POST /generate, /health, /attestation and the web page."""
import logging
from pathlib import Path

from flask import Flask, Response, jsonify, request, send_from_directory

from node1.config import Node1Config
from node1.generate import Run, complete, require_ready, sse_events
from node1.openai_api import openai_blueprint
from node1.request import BadRequest, parse_generate
from node1.runtime import Node1Runtime
from node1.scheduler import GenerationFailed
from node1.sealed import register_sealed
from node1.text import PromptTooLong
from shared.http import ApiError, install_error_handlers, install_metrics, json_body

log = logging.getLogger("twintee.node1")
WEBUI = Path(__file__).resolve().parents[1] / "webui"


def create_app(config: Node1Config, *, runtime: Node1Runtime | None = None) -> Flask:
    app = Flask(__name__)
    rt = runtime or Node1Runtime(config).start()
    app.extensions["twintee"] = rt
    install_error_handlers(app)
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
            req = parse_generate(body, config.model.max_new_tokens)
            r = require_ready(rt)
            prompt_ids = r.codec.encode_chat(req.messages, config.model.max_input_tokens)
        except (BadRequest, PromptTooLong) as exc:
            raise ApiError(400, str(exc)) from None
        run = Run(r, req, prompt_ids)
        log.info("generate session=%s prompt_tokens=%d max_tokens=%d stream=%s",
                 run.gen.id[:8], len(prompt_ids), req.max_tokens, req.stream)
        if req.stream:
            return Response(sse_events(run), mimetype="text/event-stream", headers={"Cache-Control": "no-store"})
        try:
            return jsonify(complete(run))
        except GenerationFailed as exc:
            raise ApiError(502, str(exc)) from None

    install_metrics(app, rt.metrics, refresh=rt.refresh_gauges)

    @app.get("/")
    def index():
        return send_from_directory(WEBUI, "index.html")

    @app.get("/webui/<path:name>")
    def webui(name: str):
        return send_from_directory(WEBUI, name)

    return app
