"""node1's sealed generation endpoint, POST /v1/sealed/generate: a request HPKE-sealed to node1's
attested key in, the reply streamed as sealed events. The format, both halves, is shared/sealed_protocol.py's."""
import logging

from flask import Flask, Response, jsonify, request

from node1.auth import metered, refusal
from node1.quotas import PolicyRefused, QuotaExceeded
from node1.tenants import Unauthorized
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
        grant = None
        try:
            inner, key = open_request(body, require_loaded(rt).identity.key)
            api_key = inner.pop("api_key", None)  # inside the seal: the host never sees it
            grant = app.extensions["twintee_gate"].admit(f"Bearer {api_key}" if isinstance(api_key, str) else None,
                                                         "/generate", inner)
            run = start_run(rt, {**inner, "stream": True}, rt.config.model)
        except SealedRequestError as exc:
            raise ApiError(400, str(exc)) from None
        except (Unauthorized, QuotaExceeded, PolicyRefused) as exc:
            err, status, headers = refusal(exc)
            return jsonify(err), status, headers
        except (BadRequest, PromptTooLong) as exc:
            grant.close()
            raise ApiError(400, f"inner request: {exc}") from None
        except BaseException:
            if grant is not None:
                grant.close()
            raise
        log.info("sealed generate session=%s sealed_bytes=%d prompt_tokens=%d max_tokens=%d",
                 run.gen.id[:8], len(body["ciphertext"]) // 2, len(run.prompt_ids), run.req.max_tokens)
        resp = Response(sse(seal_events(metered(event_payloads(run), grant), key)), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store"})
        resp.call_on_close(grant.close)  # also when the stream never started
        return resp
