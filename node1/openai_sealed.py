"""POST /v1/sealed/openai: an OpenAI request HPKE-sealed to node1's attested key, answered with sealed events.

The envelope is shared/sealed_protocol.py's (the same HPKE suite, response key and event sealing): the opened
request is {"request": {"method", "path", "body"}, "response_key"}; the reply's sealed events are a head
{"status", "content_type", "headers"}, then the body (one event for JSON, or each SSE event of a stream
as its `data`), then the sealed [DONE]. Host and logs see the path of this route and ciphertext only;
client/openai_transport.py speaks the other half for the official `openai` package.
"""
import json
import logging

from node1.auth import sealed_call
from node1.generate import sse
from node1.openai_request import InvalidRequest
from shared.sealed_protocol import DONE, SealedRequestError, open_request, seal_events

log = logging.getLogger("twintee.node1.openai")


def open_openai_request(body, private_key) -> tuple[str, str, object, bytes, dict]:
    """-> (method, path, inner body, response key, inner headers), or InvalidRequest naming what is wrong."""
    try:
        inner, key = open_request(body, private_key)
    except SealedRequestError as exc:
        raise InvalidRequest(str(exc), None, "sealed_request") from None
    method, path = inner.get("method"), inner.get("path")
    if method not in ("GET", "POST") or not isinstance(path, str):
        raise InvalidRequest("the opened request must name 'method' (GET or POST) and 'path'", None, "sealed_request")
    headers = inner.get("headers")
    return method, path, inner.get("body"), key, headers if isinstance(headers, dict) else {}


def sealed_reply(server, body, private_key, gate):
    """Opens the request, lets `server` answer it past the gate (the key is the opened request's
    `headers.Authorization`), and yields the answer as sealed SSE events."""
    method, path, inner, key, headers = open_openai_request(body, private_key)
    log.info("sealed openai sealed_bytes=%d", len(body["ciphertext"]) // 2)
    return sse(seal_events(_payloads(sealed_call(gate, server.call, method, path, inner, headers)), key))


def _payloads(resp):
    """The inner reply as event payloads: the head, the body (or each of the stream's), then [DONE]."""
    headers = {k: v for k, v in resp.headers.items() if k == "Retry-After"}
    yield json.dumps({"status": resp.status_code, "content_type": resp.mimetype, "headers": headers})
    if resp.mimetype != "text/event-stream":
        yield resp.get_data(as_text=True).rstrip("\n")
        yield DONE
        return
    try:
        yield from resp.payloads  # the stream's own payloads, ending with its [DONE]
    finally:
        resp.close()  # the client went away: the choices are cancelled at once
