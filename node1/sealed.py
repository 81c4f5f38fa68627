"""node1's sealed generation endpoint, POST /v1/sealed/generate: a request HPKE-sealed to node1's
attested key in, the reply streamed as sealed events. The format, both halves, is shared/sealed_protocol.py's."""
import logging

from flask import Flask, Response, request

from node1.generate import event_payloads, require_loaded, sse, start_run
from node1.request import BadRequest
from node1.text import PromptTooLong
from shared.http import ApiError, json_body
from shared.sealed_protocol import SealedRequestError, open_request, seal_events

log = logging.getLogger("twintee.node1.sealed")


def register_sealed(app: Flask, rt) -> None:
    @app.post("/v1/sealed/generate")
    def sealed_generate():
        body = json_body(request, rt.config.max_body_bytes)
        try:
            inner, key = open_request(body, require_loaded(rt).identity.key)
            run = start_run(rt, {**inner, "stream": True}, rt.config.model)
        except SealedRequestError as exc:
            raise ApiError(400, str(exc)) from None
        except (BadRequest, PromptTooLong) as exc:
            raise ApiError(400, f"inner request: {exc}") from None
        log.info("sealed generate session=%s sealed_bytes=%d prompt_tokens=%d max_tokens=%d",
                 run.gen.id[:8], len(body["ciphertext"]) // 2, len(run.prompt_ids), run.req.max_tokens)
        return Response(sse(seal_events(event_payloads(run), key)), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store"})
