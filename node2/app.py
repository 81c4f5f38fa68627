"""node2's HTTP surface: handshake, sealed steps, /health and /attestation."""
import logging

from flask import Flask, Response, jsonify, request

from attestation.errors import AttestationError
from attestation.hardening import process_hardening
from node2.config import Node2Config
from node2.runtime import Node2Runtime
from shared import wire
from shared.channel import FrameRejected
from shared.linear import compute_report
from attestation.service import ApiError, install_error_handlers, install_metrics
from shared.http import challenge_nonce, json_body

log = logging.getLogger("twintee.node2")


def create_app(config: Node2Config, *, runtime: Node2Runtime | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_frame_bytes
    rt = runtime or Node2Runtime(config).start()
    app.extensions["twintee"] = rt
    install_error_handlers(app)

    def ready() -> Node2Runtime:
        if rt.state != "ready":
            raise ApiError(503, f"node2 is not ready: {rt.reason}")
        return rt

    @app.get("/health")
    def health():
        body = {"status": "ok" if rt.state == "ready" else rt.state, "role": "node2", "reason": rt.reason,
                "peer": rt.peer}
        if rt.state == "ready":
            body.update(model=rt.release.model_id, layers=rt.release.layers_of("node2"),
                        sessions=len(rt.engine.sessions), channels=list(rt.channels),
                        measurement=rt.identity.measurement["measurement"], tee=rt.identity.attester.tee_type,
                        memory=rt.load_stats, compute=compute_report(config.model), hardening=process_hardening())
        return jsonify(body), 200 if rt.state == "ready" else 503

    @app.post("/v1/handshake/hello")
    def hello():
        return jsonify(_attested(lambda: ready().handshake_hello(json_body(request, 1 << 20))))

    @app.post("/v1/handshake/finish")
    def finish():
        return jsonify(_attested(lambda: ready().handshake_finish(json_body(request, 1 << 20))))

    @app.post("/v1/step")
    def step():
        return Response(_step(ready(), request.get_data(cache=False)), mimetype=wire.CONTENT_TYPE)

    def refresh_gauges():
        if rt.engine is not None:
            rt.metrics.sessions.set(len(rt.engine.sessions))
            rt.metrics.kv_bytes.set(rt.engine.kv_bytes())

    install_metrics(app, rt.metrics, refresh_gauges)

    @app.get("/attestation")
    def attestation():
        nonce = challenge_nonce(request.args.get("nonce", ""))
        r = ready()
        return jsonify({**r.identity.evidence_for_nonce(nonce), "peer": r.peer, "model": r.release.served_by("node2")})

    return app


def _attested(fn):
    try:
        return fn()
    except AttestationError as exc:
        if exc.check == "busy":  # a flood of unauthenticated hellos: nothing was refused, try again
            raise ApiError(503, f"handshake refused for now: {exc}") from None
        raise ApiError(403, f"attestation refused: {exc}") from None


def _step(rt: Node2Runtime, frame: bytes) -> bytes:
    try:
        peer = rt.channel_for(wire.decode_frame(frame)[0].get("ch"))
    except wire.WireError as exc:
        raise ApiError(400, f"frame rejected: {exc}") from None
    if peer is None:
        raise ApiError(409, "no such channel: handshake first")
    with peer.lock:  # one frame at a time per channel: sequence numbers must arrive in order
        if peer.chan.expired:  # checked before anything is applied: node1 re-handshakes and resends
            raise ApiError(409, "channel expired: handshake first")
        try:
            header, plain = peer.chan.open(frame)
            if header.get("type") != "step":
                raise wire.WireError("expected a step frame")
            entries, hidden, opens, close = wire.parse_step(header, plain)
            instance = wire.step_instance(header)
        except (FrameRejected, wire.WireError) as exc:
            rt.metrics.frames_rejected.labels(reason=getattr(exc, "reason", "malformed")).inc()
            log.warning("rejected a frame: %s", exc)
            raise ApiError(400, f"frame rejected: {exc}") from None
        results, ids, errors = (rt.engine.step(entries, hidden, opens, close, observe=rt.metrics.step_seconds.observe,
                                               alone=wire.step_alone(header), instance=instance)
                                if entries or close else ([], [], {}))
        if entries:
            rt.metrics.batch.set(len(entries))
            rt.metrics.tokens.inc(sum(r["ok"] for r in results))
        return peer.chan.seal(*wire.tokens_message(results, ids, errors))
