"""A recording, optionally tampering HTTP proxy between node1 and node2: the host in the middle."""
import threading

import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server


class HostProxy:
    """Forwards every request to `upstream`, keeps every byte it saw, and can corrupt step frames."""

    def __init__(self, upstream: str, port: int):
        self.upstream, self.port = upstream.rstrip("/"), port
        self.seen: list[bytes] = []
        self.tamper_next_step = False
        self.lock = threading.Lock()
        app = Flask("host-proxy")
        app.add_url_rule("/<path:path>", "fwd", self._forward, methods=["GET", "POST"])
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()

    def capture(self) -> bytes:
        with self.lock:
            return b"".join(self.seen)

    def _forward(self, path: str):
        body = request.get_data()
        with self.lock:
            # Only a frame that carries a step (the routing header is plaintext), not a close-only frame.
            if path == "v1/step" and self.tamper_next_step and b'"sessions":[{' in body:
                self.tamper_next_step = False
                body = body[:-20] + bytes([body[-20] ^ 0x01]) + body[-19:]
            self.seen.append(body)
        r = requests.request(request.method, f"{self.upstream}/{path}", params=request.args, data=body,
                             headers={"Content-Type": request.headers.get("Content-Type", "")}, timeout=300)
        with self.lock:
            self.seen.append(r.content)
        return Response(r.content, status=r.status_code, content_type=r.headers.get("Content-Type"))
