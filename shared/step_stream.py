"""The step socket's byte stream: sealed step frames (shared/wire.py) on one persistent TCP connection
from node1 to node2, each answered in order, as POST /v1/step answers them over HTTP.

    request  u32 length | sealed step frame
    reply    u32 length | u16 status | sealed tokens frame (200) or {"error": ...} JSON (4xx/5xx)

The statuses are the HTTP route's, so node1's link reads both transports alike. A decode step is a
few kilobytes each way; over HTTP its fixed cost (nginx, gunicorn's thread hand-over, Flask) was a
sixth of a q4_1 step. Frames longer than MAX_FRAME_BYTES (long prefills) go over HTTP, whose cost is
then small beside the step's, so nobody can make node2 hold more than that per connection.
"""
import json
import socket
import struct
import time

MAX_FRAME_BYTES = 1 << 20
REQUEST = struct.Struct(">I")
REPLY = struct.Struct(">IH")
MAX_ERROR_BYTES = 4096  # an error reply is one short JSON message


class StreamClosed(OSError):
    """The peer closed the connection, or a record did not arrive before its deadline."""


def request_record(frame: bytes) -> bytes:
    return REQUEST.pack(len(frame)) + frame


def reply_record(status: int, body: bytes) -> bytes:
    return REPLY.pack(len(body), status) + body


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()[:MAX_ERROR_BYTES]


def read_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    """n bytes, or StreamClosed at EOF or once time.monotonic() passes `deadline` (a slow sender
    cannot hold a reader longer than that, however it paces its bytes)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StreamClosed("deadline passed")
        sock.settimeout(left)
        try:
            k = sock.recv_into(view[got:])
        except (socket.timeout, OSError) as exc:
            raise StreamClosed(type(exc).__name__) from None
        if k == 0:
            raise StreamClosed("closed by peer")
        got += k
    return bytes(buf)


def read_reply(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    """-> (status, body) of node2's next reply."""
    n, status = REPLY.unpack(read_exact(sock, REPLY.size, deadline))
    if n > (MAX_FRAME_BYTES if status == 200 else MAX_ERROR_BYTES):
        raise StreamClosed("reply longer than the stream allows")
    return status, read_exact(sock, n, deadline)
