"""node1/node2_stream.py and node1/link.py's choice of transport, against node2's real step socket and
HTTP app in-process (fake engine): steps ride one persistent connection; a frame too long for it, a
dead or hostile socket send the step over HTTP instead, once, and the socket is tried again later."""
import socket
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from werkzeug.serving import make_server

from node1 import node2_stream
from node1.link import LinkError, Node2Link
from node2.runtime import PeerChannel
from node2.step_socket import StepSocket
from shared import step_stream, wire
from shared.channel import SealedChannel
from shared.metrics import NodeMetrics
from tests.test_node2_app import SESSION, channel_keys


@pytest.fixture()
def node2(node2_runtime, node2_app):
    http = make_server("127.0.0.1", 0, node2_app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    sock = StepSocket(node2_runtime, "127.0.0.1", 0).start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{http.server_port}", step_url=f"tcp://127.0.0.1:{sock.port}",
                          socket=sock, rt=node2_runtime)
    sock.close()
    http.shutdown()


def linked(node2, step_url: str) -> Node2Link:
    """node1's link with a channel node2 already holds, as after a handshake."""
    keys = channel_keys()
    node2.rt.channels[keys.channel_id.hex()] = PeerChannel(SealedChannel(keys, "responder"))
    link = Node2Link(node2.url, None, None, rekey_frames=1000, rekey_seconds=3600, timeout=10,
                     metrics=NodeMetrics("node1"), step_url=step_url)
    link.channel = SealedChannel(keys, "initiator")
    return link


def step(link: Node2Link, n: int = 1) -> list[int]:
    header, body = wire.step_message([{"id": SESSION, "step": 0, "pos": 0, "n": n}], torch.ones(n, 8),
                                     {SESSION: {"capacity": 4096, "temperature": 0.0}}, [])
    return wire.parse_tokens(*link.exchange(header, body))[1]


def frames(link: Node2Link, transport: str) -> float:
    return link.metrics.registry.get_sample_value("twintee_link_frames_total", {"transport": transport}) or 0.0


def test_steps_ride_one_persistent_connection(node2):
    link = linked(node2, node2.step_url)
    assert [step(link) for _ in range(3)] == [[7]] * 3
    assert frames(link, "socket") == 3 and frames(link, "http") == 0
    assert len(node2.socket.connections) == 1 and len(node2.rt.engine.steps) == 3


def test_a_frame_too_long_for_the_socket_goes_over_http(node2, monkeypatch):
    link = linked(node2, node2.step_url)
    step(link, n=1)
    monkeypatch.setattr(step_stream, "MAX_FRAME_BYTES", 4096)
    step(link, n=200)  # 200 x 8 float32 rows and the header: past 4096 bytes
    assert frames(link, "socket") == 1 and frames(link, "http") == 1 and len(node2.rt.engine.steps) == 2


def test_a_connection_node2_closed_while_idle_is_replaced_before_sending(node2):
    link = linked(node2, node2.step_url)
    step(link)
    node2.socket.connections[0].close()  # as node2's idle limit does
    time.sleep(0.1)
    step(link)
    assert frames(link, "socket") == 2 and frames(link, "http") == 0


def test_no_socket_sends_over_http_and_rests_before_trying_again(node2, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        link = linked(node2, dead)
        assert step(link) == [7] and step(link) == [7]
    assert frames(link, "http") == 2 and frames(link, "socket") == 0
    tries = []
    monkeypatch.setattr(node2_stream.socket, "create_connection", lambda *a, **k: tries.append(a) or 1 / 0)
    step(link)
    assert tries == []  # resting: RETRY_S has not passed
    link.stream.retry_at = 0.0
    link.stream.host, link.stream.port = "127.0.0.1", node2.socket.port
    monkeypatch.undo()
    step(link)
    assert frames(link, "socket") == 1 and len(node2.rt.engine.steps) == 4


class Relay:
    """A host in the middle on the step port: forwards node1's request, then `reply_with(reply bytes)`."""

    def __init__(self, upstream_port: int, reply_with):
        self.upstream_port, self.reply_with = upstream_port, reply_with
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            client, _ = self.listener.accept()
            with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                (n,) = step_stream.REQUEST.unpack(step_stream.read_exact(client, step_stream.REQUEST.size, time.monotonic() + 5))
                up.sendall(step_stream.request_record(step_stream.read_exact(client, n, time.monotonic() + 5)))
                reply = step_stream.read_reply(up, time.monotonic() + 5)
                client.sendall(self.reply_with(step_stream.reply_record(*reply)))


def test_a_step_whose_reply_is_lost_is_applied_once_and_the_copy_refused_as_a_replay(node2):
    link = linked(node2, Relay(node2.socket.port, lambda reply: b"").url)
    with pytest.raises(LinkError, match="refused the step"):
        step(link)
    # node2 applied it once over the socket; the same frame sent again over HTTP was a replay, so the
    # link dropped the channel (node1's scheduler then replays the session under new keys).
    assert len(node2.rt.engine.steps) == 1 and link.channel is None
    assert node2.rt.metrics.registry.get_sample_value("twintee_frames_rejected_total", {"reason": "replay"}) == 1


def test_a_reply_altered_on_the_way_is_rejected_and_the_channel_dropped(node2):
    link = linked(node2, Relay(node2.socket.port, lambda reply: reply[:-1] + bytes([reply[-1] ^ 1])).url)
    with pytest.raises(LinkError, match="reply was rejected"):
        step(link)
    assert link.channel is None and len(node2.rt.engine.steps) == 1
