"""The host in the middle, as tests play it: a recording HTTP proxy that can rewrite replies and
corrupt step frames. Used in front of node2 (what crosses between the nodes) and of node1 (what a
client's traffic shows, and tampered attestation)."""
import threading

import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server


class HostProxy:
    """Forwards every request to `upstream`, keeps every byte it saw, and can alter traffic."""

    def __init__(self, upstream: str, port: int = 0):
        self.upstream = upstream.rstrip("/")
        self.rewrite = None  # (path, reply bytes) -> reply bytes, for 200 replies
        self.tamper_next_step = False  # flip one bit in the next step frame to node2
        self.requests: list[tuple[str, str, bytes]] = []  # (method, path, body)
        self.captured = bytearray()
        self.lock = threading.Lock()
        app = Flask("host-proxy")
        app.add_url_rule("/", "root", self._forward, methods=["GET", "POST"], defaults={"path": ""})
        app.add_url_rule("/<path:path>", "fwd", self._forward, methods=["GET", "POST"])
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()

    def capture(self) -> bytes:
        with self.lock:
            return bytes(self.captured)

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, p, _ in self.requests]

    def _forward(self, path: str):
        body = self._maybe_tamper(path, request.get_data())
        headers = {"Content-Type": request.headers.get("Content-Type", "")}
        if "Authorization" in request.headers:  # a plain request's API key: the host sees it, so it is captured
            headers["Authorization"] = request.headers["Authorization"]
        r = requests.request(request.method, f"{self.upstream}/{path}", params=request.args, data=body, timeout=300,
                             headers=headers)
        reply = self.rewrite(path, r.content) if self.rewrite and r.status_code == 200 else r.content
        with self.lock:
            self.requests.append((request.method, path, body))
            self.captured += headers.get("Authorization", "").encode() + body + reply
        return Response(reply, status=r.status_code, content_type=r.headers.get("Content-Type"))

    def _maybe_tamper(self, path: str, body: bytes) -> bytes:
        with self.lock:
            # Only a frame that carries a step (its routing header is plaintext), not a close-only one.
            if path == "v1/step" and self.tamper_next_step and b'"sessions":[{' in body:
                self.tamper_next_step = False
                return body[:-20] + bytes([body[-20] ^ 0x01]) + body[-19:]
        return body
