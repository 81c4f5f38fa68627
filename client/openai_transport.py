"""An httpx transport that gives the official `openai` package end-to-end encryption to node1:

    client = openai.OpenAI(base_url=URL + "/v1", api_key="unused",
                           http_client=httpx.Client(transport=VerifyingTransport(URL, release_dir)))

On first use it verifies both nodes' evidence against the pinned release exactly as `python -m client
chat` does (client/attest.py); then every request is HPKE-sealed to node1's attested key and posted to
/v1/sealed/openai (node1/openai_sealed.py), and the sealed reply is opened, streams included. The host,
proxies and logs see ciphertext only. A route it cannot seal is refused, never sent in the clear.
"""
import json
from pathlib import Path

import httpx
import requests

from attestation.errors import PolicyError
from client.attest import VerificationFailed, attest, pinned_policy, require_verified
from client.sealed import sse_data
from shared.sealed_protocol import EventOpener, SealedStreamError, seal_request

SEALED_PATH = "/v1/sealed/openai"
SEALED_ROUTES = {("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")}


class NotVerified(httpx.TransportError):
    """node1 or node2 failed verification, or the route cannot be sealed: nothing was sent."""


class VerifyingTransport(httpx.BaseTransport):
    def __init__(self, url: str, release_dir: Path, *, inner: httpx.BaseTransport | None = None,
                 http: requests.Session | None = None):
        self.url, self.release_dir = url.rstrip("/"), Path(release_dir)
        self.inner = inner or httpx.HTTPTransport()
        self.http = http or requests.Session()  # for the attestation, as client/attest.py reads it
        self.node1_key: bytes | None = None
        self.reports: dict | None = None  # both nodes' verdicts, for the application to show

    def verify(self) -> bytes:
        """node1's attested key, appraising both nodes the first time."""
        if self.node1_key is None:
            try:
                self.reports = attest(self.http, self.url, pinned_policy(self.release_dir, self.http, self.url))
                self.node1_key = require_verified(self.reports)
            except (VerificationFailed, PolicyError, requests.RequestException) as exc:
                raise NotVerified(f"refusing to send: {exc}") from None
        return self.node1_key

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        route = (request.method, request.url.path)
        if route not in SEALED_ROUTES:
            raise NotVerified(f"refusing to send {request.method} {request.url.path}: it has no sealed form")
        key = self.verify()
        body = json.loads(request.read()) if request.method == "POST" else None
        inner = {"method": route[0], "path": route[1], "body": body}
        if "authorization" in request.headers:  # the API key travels inside the seal, never beside it
            inner["headers"] = {"Authorization": request.headers["authorization"]}
        wire, response_key = seal_request(inner, key)
        outer = self.inner.handle_request(httpx.Request("POST", self.url + SEALED_PATH, json=wire,
                                                        extensions=request.extensions))
        if outer.status_code != 200:  # the envelope itself was refused: its error names no content
            return httpx.Response(outer.status_code, headers=outer.headers, content=outer.read(), request=request)
        return _opened(outer, response_key, request)


def _opened(outer: httpx.Response, key: bytes, request: httpx.Request) -> httpx.Response:
    opener, events = EventOpener(key), sse_data(outer.iter_lines())
    try:
        head = json.loads(opener.open(next(events)))
    except (StopIteration, ValueError, SealedStreamError) as exc:
        outer.close()
        raise httpx.RemoteProtocolError(f"the sealed reply's head does not open: {exc}") from None
    headers = {"content-type": head["content_type"], **head.get("headers", {})}
    stream = OpenedStream(opener, events, outer, sse=head["content_type"] == "text/event-stream")
    return httpx.Response(head["status"], headers=headers, stream=stream, request=request)


class OpenedStream(httpx.SyncByteStream):
    """The inner reply's bytes as node1 would have sent them in the clear: the JSON body, or its SSE events."""

    def __init__(self, opener: EventOpener, events, outer: httpx.Response, sse: bool):
        self.opener, self.events, self.outer, self.sse = opener, events, outer, sse

    def __iter__(self):
        for data in self.events:
            payload = self.opener.open(data)
            if self.opener.done:
                if self.sse:
                    yield b"data: [DONE]\n\n"
                return
            yield (f"data: {payload}\n\n" if self.sse else payload).encode()
        raise SealedStreamError(f"the sealed reply ended after {self.opener.index} events without its sealed end")

    def close(self) -> None:
        self.outer.close()
