"""Servers on loopback that stand where node2 should answer: a real HTTP server whose replies a test
chooses (tests/test_node2_http.py, tests/test_attestation_api.py)."""
import itertools
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serving(handler):
    """-> the URL of a server on loopback answering with `handler`, for as long as the block runs."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()


class Impostor(BaseHTTPRequestHandler):
    """Whatever answers on node2's address before the handshake: a 200 with the Content-Length and the
    chunks of `reply()`, each sent as soon as it is made, until the client leaves."""

    protocol_version = "HTTP/1.1"
    content_type = "application/json"

    def reply(self) -> tuple[int, Iterable[bytes]]:
        raise NotImplementedError

    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        length, chunks = self.reply()
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", self.content_type)
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass

    do_POST = do_GET

    def log_message(self, *args):
        pass


class AnswersWith(Impostor):
    body = b""  # set by the test

    def reply(self):
        return len(self.body), [self.body]


class Floods(Impostor):
    """Claims a 10 GB reply and sends bytes until the client leaves."""

    def reply(self):
        return 10 * 2**30, itertools.repeat(b"[" * 65536)


class Trickles(Impostor):
    """Sends its reply a byte every 0.1 s: each read gets a byte well inside the socket timeout, so only
    a deadline over the whole reply ends the call."""

    def reply(self):
        def paced():
            for _ in range(60):
                yield b"x"
                time.sleep(0.1)
        return 60, paced()
