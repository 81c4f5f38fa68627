"""node1/node2_http.py: one keep-alive connection, and one retry on a fresh one when node2 closed the
reused connection under us (gunicorn drops keep-alive connections idle for 2 s)."""
import time
from http.server import BaseHTTPRequestHandler

import pytest

from node1 import node2_http
from node1.node2_http import Node2Http, Node2Unreachable
from tests.impostors import AnswersWith, Floods, Trickles, serving


class ClosesAfterEachReply(BaseHTTPRequestHandler):
    """Answers, then closes the connection without saying so: what a keep-alive timeout looks like."""

    protocol_version = "HTTP/1.1"
    connections: list = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.connections.append(self.client_address)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    with serving(ClosesAfterEachReply) as url:
        yield url


def test_a_reused_connection_closed_by_node2_is_retried_once_on_a_fresh_one(server, monkeypatch):
    # Make the close arrive after our stale check, as it does when the two cross on the wire.
    monkeypatch.setattr(node2_http.select, "select", lambda r, w, x, t: ([], [], []))
    client = Node2Http(server, timeout=5)
    for _ in range(3):
        assert client.post("/v1/step", b"frame", "application/octet-stream") == (200, b'{"ok": true}')
        assert client.get_json("/health", 5) == {"ok": True}


def test_a_fresh_connection_that_fails_is_not_retried():
    client = Node2Http("http://127.0.0.1:9", timeout=1)  # nothing listens on the discard port
    with pytest.raises(Node2Unreachable):
        client.post("/v1/step", b"frame", "application/octet-stream")
    assert client.get_json("/health", 1) is None


@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"ok": "\\ud800"}', b"not json", b"[1]"],
                         ids=["nested", "lone-surrogate", "not-json", "not-an-object"])
def test_a_reply_that_is_not_a_json_object_reads_as_empty_never_raising(body, monkeypatch):
    monkeypatch.setattr(AnswersWith, "body", body)
    with serving(AnswersWith) as url:
        client = Node2Http(url, timeout=5)
        assert client.get_json("/health", 5) == {}  # a RecursionError from the nested body before
        assert client.post_json("/v1/handshake/hello", {}, 5) == (200, {})


def test_a_reply_over_the_limit_is_dropped_after_reading_at_most_the_limit():
    with serving(Floods) as url:
        client = Node2Http(url, timeout=5)
        with pytest.raises(Node2Unreachable, match="ReplyTooLong"):
            client.post("/v1/step", b"frame", "application/octet-stream")
        assert client.get_json("/health", 5) is None and client.conn is None  # the connection dropped


def test_a_reply_trickled_byte_by_byte_ends_at_the_calls_timeout_not_when_the_peer_stops():
    with serving(Trickles) as url:
        client = Node2Http(url, timeout=1)
        t0 = time.monotonic()
        with pytest.raises(Node2Unreachable):  # the old client read all 60 bytes over 6 s and returned 200
            client.post("/v1/step", b"frame", "application/octet-stream")
        assert time.monotonic() - t0 < 3  # the 1 s deadline, with room for a slow machine
        assert client.conn is None
