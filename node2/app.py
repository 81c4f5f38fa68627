"""node2's HTTP surface: handshake, sealed steps, /health and /attestation. Routes only: the step
link lives in node2/step.py, node2's state in node2/runtime.py."""
from flask import Flask, Response, jsonify, request

from attestation.errors import AttestationError
from attestation.hardening import process_hardening
from attestation.service import ApiError, install_error_handlers, install_metrics, json_error
from node2.config import Node2Config
from node2.runtime import Node2Runtime
from node2.step import StepRefused, run_step
from shared import wire
from shared.http import challenge_nonce, json_body
from shared.linear import compute_report

HANDSHAKE_BODY_BYTES = 1 << 20


def create_app(config: Node2Config, *, runtime: Node2Runtime | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_frame_bytes
    rt = runtime or Node2Runtime(config).start()
    app.extensions["twintee"] = rt
    install_error_handlers(app)
    app.register_error_handler(StepRefused, lambda exc: json_error(exc.status, str(exc)))
    install_metrics(app, rt.metrics, lambda: _refresh_gauges(rt))

    @app.get("/health")
    def health():
        body = _health(rt, config)
        return jsonify(body), 200 if body["status"] == "ok" else 503

    @app.post("/v1/handshake/hello")
    def hello():
        return jsonify(_attested(lambda: rt.require_ready().handshake_hello(json_body(request, HANDSHAKE_BODY_BYTES))))

    @app.post("/v1/handshake/finish")
    def finish():
        return jsonify(_attested(lambda: rt.require_ready().handshake_finish(json_body(request, HANDSHAKE_BODY_BYTES))))

    @app.post("/v1/step")
    def step():
        return Response(run_step(rt.require_ready(), request.get_data(cache=False)), mimetype=wire.CONTENT_TYPE)

    @app.get("/attestation")
    def attestation():
        nonce = challenge_nonce(request.args.get("nonce", ""))
        r = rt.require_ready()
        return jsonify({**r.identity.evidence_for_nonce(nonce), "peer": r.peer, "model": r.release.served_by("node2")})

    return app


def _health(rt: Node2Runtime, config: Node2Config) -> dict:
    body = {"status": "ok" if rt.state == "ready" else rt.state, "role": "node2", "reason": rt.reason, "peer": rt.peer}
    if rt.state == "ready":
        body.update(model=rt.release.model_id, layers=rt.release.layers_of("node2"),
                    sessions=len(rt.engine.sessions), channels=list(rt.channels),
                    measurement=rt.identity.measurement["measurement"], tee=rt.identity.attester.tee_type,
                    memory=rt.load_stats, compute=compute_report(config.model), hardening=process_hardening())
    return body


def _refresh_gauges(rt: Node2Runtime) -> None:
    if rt.engine is not None:
        sessions = len(rt.engine.sessions)
        rt.metrics.sessions.set(sessions)
        rt.metrics.kv_bytes.set(rt.engine.kv_bytes())
        if sessions == 0:  # set per step; with no session left no step will say so
            rt.metrics.batch.set(0)


def _attested(fn):
    try:
        return fn()
    except AttestationError as exc:
        if exc.check == "busy":  # a flood of unauthenticated hellos: nothing was refused, try again
            raise ApiError(503, f"handshake refused for now: {exc}") from None
        raise ApiError(403, f"attestation refused: {exc}") from None
