"""The host in the middle, as tests play it: a recording HTTP proxy that can rewrite replies and
corrupt step frames, and a relay on node2's step socket doing the same to the frames on it. Used in
front of node2 (what crosses between the nodes) and of node1 (what a client's traffic shows, and
tampered attestation)."""
import socket
import threading
import time

import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server

from shared import step_stream


class HostProxy:
    """Forwards every request to `upstream`, keeps every byte it saw, and can alter traffic."""

    def __init__(self, upstream: str, port: int = 0, step_upstream: int | None = None, step_port: int = 0):
        """step_upstream: node2's step port, to relay it too (on step_port; `step_url` is its address)."""
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
        self.step_upstream, self.step_listener = step_upstream, None
        if step_upstream:
            self.step_listener = socket.create_server(("127.0.0.1", step_port))
            threading.Thread(target=self._relay_steps, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        if self.step_listener:
            self.step_listener.close()

    @property
    def step_url(self) -> str:
        return f"tcp://127.0.0.1:{self.step_listener.getsockname()[1]}"

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

    def _relay_steps(self):
        while True:
            try:
                client, _ = self.step_listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay_connection, args=(client,), daemon=True).start()

    def _relay_connection(self, client: socket.socket):
        """Record by record, as the step socket's framing has it, so a frame can be altered whole."""
        with client, socket.create_connection(("127.0.0.1", self.step_upstream)) as up:
            try:
                while True:
                    (n,) = step_stream.REQUEST.unpack(step_stream.read_exact(client, step_stream.REQUEST.size, time.monotonic() + 300))
                    frame = self._maybe_tamper("v1/step", step_stream.read_exact(client, n, time.monotonic() + 30))
                    up.sendall(step_stream.request_record(frame))
                    status, reply = step_stream.read_reply(up, time.monotonic() + 300)
                    with self.lock:
                        self.requests.append(("STEP", "v1/step", frame))
                        self.captured += frame + reply
                    client.sendall(step_stream.reply_record(status, reply))
            except OSError:
                return  # either side closed
