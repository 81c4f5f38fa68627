"""node2/step_socket.py on a real loopback port over a Node2Runtime with a fake engine: steps answered
as the HTTP route answers them, and the limits a stranger on the network meets (deadlines, a frame
cap, a connection cap that evicts the idle and never the busy, a refusal closes)."""
import json
import socket
import time

import pytest

from node2 import step_socket
from node2.runtime import PeerChannel
from node2.step_socket import StepSocket
from shared import step_stream, wire
from shared.channel import SealedChannel
from tests.test_node2_app import channel_keys, flip_last_byte, rejected, step_frame


@pytest.fixture()
def server(node2_runtime):
    srv = StepSocket(node2_runtime, "127.0.0.1", 0).start()
    yield srv
    srv.close()


@pytest.fixture()
def node1(node2_runtime) -> SealedChannel:
    keys = channel_keys()
    node2_end = SealedChannel(keys, "responder")
    node2_runtime.channels[node2_end.channel_id] = PeerChannel(node2_end)
    return SealedChannel(keys, "initiator")


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def exchange(sock, frame: bytes) -> tuple[int, bytes]:
    sock.sendall(step_stream.request_record(frame))
    return step_stream.read_reply(sock, time.monotonic() + 10)


def closed_by_node2(sock, within: float = 10.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_steps_on_one_connection_round_trip_in_order(server, node2_runtime, node1):
    sock = connect(server)
    for step in range(3):
        status, body = exchange(sock, step_frame(node1))
        assert status == 200
        assert wire.parse_tokens(*node1.open(body)) == ([{"id": "a1" * 16, "step": 0, "ok": True}], [7], {})
    assert len(node2_runtime.engine.steps) == 3


@pytest.mark.parametrize("make, status, words", [
    (lambda n1: step_frame(SealedChannel(channel_keys(), "initiator")), 409, "no such channel"),
    (lambda n1: flip_last_byte(step_frame(n1)), 400, "tag"),
    (lambda n1: b"POST /v1/step HTTP/1.1", 400, "not a TwinTEE frame"),
    # A stranger's header nested past the JSON parser's depth: read before any tag is checked.
    (lambda n1: b"TT01" + (60000).to_bytes(4, "big") + b"[" * 60000, 400, "not JSON"),
])
def test_a_refused_frame_is_answered_with_its_status_then_closed(server, node2_runtime, node1, make, status, words):
    sock = connect(server)
    got, body = exchange(sock, make(node1))
    assert got == status and words in json.loads(body)["error"]
    assert closed_by_node2(sock) and node2_runtime.engine.steps == []


def test_a_tampered_frame_is_counted_as_over_http(server, node2_runtime, node1):
    exchange(connect(server), flip_last_byte(step_frame(node1)))
    assert rejected(node2_runtime, "tag") == 1


def test_a_frame_past_the_cap_is_refused_before_it_is_read(server, node2_runtime):
    sock = connect(server)
    sock.sendall(step_stream.REQUEST.pack(step_stream.MAX_FRAME_BYTES + 1))  # and never the bytes
    status, body = step_stream.read_reply(sock, time.monotonic() + 10)
    assert status == 413 and "over HTTP" in json.loads(body)["error"] and closed_by_node2(sock)


def test_an_http_request_on_the_port_gets_413_not_a_hang(server):
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # "GET " read as a length of 1.2 GB
    assert step_stream.read_reply(sock, time.monotonic() + 10)[0] == 413


def test_before_ready_is_503(server, node2_runtime, node1):
    node2_runtime.state, node2_runtime.reason = "loading", "loading model"
    status, body = exchange(connect(server), step_frame(node1))
    assert status == 503 and "not ready" in json.loads(body)["error"]


def test_a_silent_or_trickling_stranger_is_closed_at_the_first_frame_deadline(server, monkeypatch):
    monkeypatch.setattr(step_socket, "FIRST_FRAME_S", 0.5)
    silent, trickle = connect(server), connect(server)
    t0 = time.monotonic()
    trickle.sendall(step_stream.REQUEST.pack(100))
    cut = None
    for _ in range(60):  # a byte every 0.1 s for 6 s: a deadline renewed per byte would never run out
        try:
            trickle.sendall(b"x")
        except OSError:
            cut = time.monotonic() - t0  # closed under us: the deadline
            break
        time.sleep(0.1)
    assert cut is not None and cut < 4, f"the trickling sender was still connected after {cut or 6:.1f} s"
    assert closed_by_node2(silent)


def test_a_full_house_evicts_the_oldest_idle_connection_never_a_busy_one(server, node2_runtime, node1, monkeypatch):
    monkeypatch.setattr(step_socket, "MAX_CONNECTIONS", 3)
    monkeypatch.setattr(step_socket, "FIRST_FRAME_S", 600.0)  # no stranger leaves by its deadline mid-test
    node1_sock = connect(server)
    assert exchange(node1_sock, step_frame(node1))[0] == 200  # busy from now on
    strangers = [connect(server), connect(server)]
    admitted(server, 3)  # accepted in order
    newcomer = connect(server)
    assert closed_by_node2(strangers[0]) and evictions(node2_runtime, "evicted") == 1
    assert exchange(node1_sock, step_frame(node1))[0] == 200  # node1's connection is untouched
    for c in server.connections:  # every slot busy now (as three node1 links would be): a newcomer is refused
        c.busy = True
    admitted(server, 3)
    refused = connect(server)
    assert closed_by_node2(refused) and evictions(node2_runtime, "refused") == 1
    assert exchange(node1_sock, step_frame(node1))[0] == 200
    for s in (strangers[1], newcomer):
        s.close()


def admitted(server, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(server.connections) != n:
        assert time.monotonic() < deadline, f"{len(server.connections)} connections admitted, not {n}"
        time.sleep(0.01)


def evictions(rt, event: str) -> float:
    return rt.metrics.registry.get_sample_value("twintee_step_socket_connections_total", {"event": event}) or 0.0
