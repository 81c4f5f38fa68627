"""node1's persistent connection to node2's step socket (node2/step_socket.py; the records are
shared/step_stream.py's). A decode step's round trip on it is one send and one receive, against
nginx, gunicorn and Flask on the HTTP route.

Best effort by design: when the socket cannot be reached or fails mid-step, the link sends that
frame over HTTP instead and this waits RETRY_S before trying the socket again, so a port that is
blocked, flooded or played by a host in the middle costs speed, never a step.
"""
import select
import socket
import time

from node1.node2_http import Node2Unreachable
from shared import step_stream
from shared.step_stream import StreamClosed

CONNECT_TIMEOUT_S = 2.0
RETRY_S = 5.0


class Node2Stream:
    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.retry_at = 0.0

    def carries(self, frame: bytes) -> bool:
        """Whether this frame goes over the socket: it is short enough, and the socket is not resting."""
        return len(frame) <= step_stream.MAX_FRAME_BYTES and time.monotonic() >= self.retry_at

    def exchange(self, frame: bytes) -> tuple[int, bytes]:
        """-> (status, body) as the HTTP route would answer, or Node2Unreachable (then rests RETRY_S).
        Not thread-safe: the link's lock serializes its calls."""
        try:
            sock = self._connection()
            sock.sendall(step_stream.request_record(frame))
            status, body = step_stream.read_reply(sock, time.monotonic() + self.timeout)
        except (OSError, StreamClosed) as exc:
            self.close()
            self.retry_at = time.monotonic() + RETRY_S
            raise Node2Unreachable(type(exc).__name__) from None
        if status != 200:
            self.close()  # node2 closes its side after any refusal
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connection(self) -> socket.socket:
        # node2 closes a connection idle for a while; a closed socket polls readable (EOF), and so
        # would one with unexpected bytes: either way start afresh rather than send into it.
        if self.sock is not None and select.select([self.sock], [], [], 0)[0]:
            self.close()
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock
