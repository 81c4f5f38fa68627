"""node1's one keep-alive HTTP/1.1 connection to node2, over the standard library's http.client.

A decode step is one small POST each way, so the client's own Python is a visible share of a step:
`requests` spends ~0.5 ms a call building and dispatching its objects (measured: 2.8 -> 2.3 ms of
cross-node cost when the link dropped it), http.client a few tens of microseconds. node2 is
reached directly, never through a proxy the environment names.
"""
import http.client
import json
import math
import select
import socket
import time
from urllib.parse import urlsplit

from attestation.canonical import json_object


# node2's replies are a tokens frame, a handshake message with its evidence or a short JSON: kilobytes.
# An impostor on node2's address is not trusted before the handshake, nor with node1's memory.
MAX_REPLY_BYTES = 1 << 20


class Node2Unreachable(OSError):
    """No answer from node2: refused, reset, timed out or closed mid-reply."""


class ReplyTooLong(http.client.HTTPException):
    """A reply past MAX_REPLY_BYTES: the connection is dropped, as for one that failed mid-reply."""


class _DeadlineSocket(socket.socket):
    """A connected socket whose reads all end by `deadline` (time.monotonic()). A socket timeout alone
    bounds each read, so a peer trickling a byte just inside it held a call for as long as it liked."""

    deadline = math.inf

    def recv_into(self, buffer, nbytes=0, flags=0):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the reply did not arrive within the call's timeout")
        self.settimeout(left)
        return super().recv_into(buffer, nbytes, flags)


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        plain, timeout = self.sock, self.sock.gettimeout()
        self.sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        self.sock.settimeout(timeout)  # the request's sendall is bounded as before


class Node2Http:
    def __init__(self, url: str, timeout: float):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, content_type: str, timeout: float | None = None) -> tuple[int, bytes]:
        """-> (status, body). Not thread-safe: the link's lock serializes its calls."""
        return self._call("POST", path, body, {"Content-Type": content_type}, timeout or self.timeout)

    def _call(self, method: str, path: str, body, headers: dict, timeout: float) -> tuple[int, bytes]:
        # gunicorn closes a keep-alive connection idle for 2 s; if that close crosses our request on
        # the wire the reused connection fails, so it is tried once more on a fresh one (issue 12: an
        # idle node1 re-handshook every few seconds because its /health probe lost that race). A step
        # sent twice is safe: node2 either never saw it or refuses the copy as a replay.
        reused = self.conn is not None and self.conn.sock is not None
        try:
            return self._once(method, path, body, headers, timeout)
        except Node2Unreachable:
            if not reused:
                raise
        return self._once(method, path, body, headers, timeout)

    def _once(self, method: str, path: str, body, headers: dict, timeout: float) -> tuple[int, bytes]:
        conn, deadline = self._connection(timeout), time.monotonic() + timeout
        try:
            conn.request(method, path, body=body, headers=headers)  # connects first if it must
            conn.sock.deadline = deadline  # connect and sendall are bounded by `timeout` as a whole
            resp = conn.getresponse()
            reply = resp.read(MAX_REPLY_BYTES + 1)  # never more than that into memory, whatever answers
            if len(reply) > MAX_REPLY_BYTES:
                raise ReplyTooLong(f"over {MAX_REPLY_BYTES} bytes")
            return resp.status, reply
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Node2Unreachable(type(exc).__name__) from None

    def get(self, path: str, timeout: float | None = None) -> tuple[int, bytes]:
        """-> (status, body). Not thread-safe, as post."""
        return self._call("GET", path, None, {}, timeout or self.timeout)

    def post_json(self, path: str, payload: dict, timeout: float) -> tuple[int, dict]:
        status, body = self.post(path, json.dumps(payload).encode(), "application/json", timeout)
        return status, json_or_empty(body)

    def get_json(self, path: str, timeout: float) -> dict | None:
        try:
            return json_or_empty(self.get(path, timeout)[1])
        except Node2Unreachable:
            return None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connection(self, timeout: float) -> _Connection:
        # gunicorn closes a keep-alive connection idle for 2 s; a closed socket polls readable (EOF),
        # so reconnect first rather than send a sealed frame into it (urllib3 checks the same way).
        if self.conn is not None and self.conn.sock is not None:
            if select.select([self.conn.sock], [], [], 0)[0]:
                self.close()
        if self.conn is None:
            self.conn = _Connection(self.host, self.port, timeout=timeout)
        self.conn.timeout = timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)
        return self.conn


def json_or_empty(body: bytes) -> dict:
    """A reply's JSON object, or {} for anything else: whatever answers on node2's address is not
    trusted before the handshake."""
    return json_object(body) or {}
