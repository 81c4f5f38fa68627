"""node2's step socket: node1's sealed step frames on persistent TCP connections (shared/step_stream.py),
each run by node2/step.py exactly as POST /v1/step runs it, on the connection's own thread.

It faces the same network as node2's nginx, without nginx in front, so it keeps its own limits:
- at most MAX_CONNECTIONS at once. A newcomer past that evicts the oldest connection that has not
  yet sent a whole frame; if every one is busy, the newcomer is closed;
- a connection must send its first whole frame within FIRST_FRAME_S, and any frame within FRAME_S of
  its first byte, so slow senders cannot hold a thread (it is idle-closed after IDLE_S between frames);
- a frame is at most step_stream.MAX_FRAME_BYTES; anything longer is refused before it is read;
- any refusal (a frame that does not open under a live channel, a malformed one, node2 not ready)
  is answered with its status and the connection closed.
A connection that never sends a frame that opens costs one thread for FIRST_FRAME_S and nothing
else. node1 falls back to HTTP whenever the socket fails it, so flooding this port slows node1's
steps to their HTTP cost; it cannot stop them.
"""
import logging
import socket
import threading
import time

from attestation.service import ApiError
from node2.runtime import Node2Runtime
from node2.step import StepRefused, run_step
from shared import step_stream
from shared.step_stream import StreamClosed

log = logging.getLogger("twintee.node2")
MAX_CONNECTIONS = 32
FIRST_FRAME_S = 5.0
FRAME_S = 30.0
IDLE_S = 75.0


class _Connection:
    def __init__(self, sock: socket.socket):
        self.sock, self.opened = sock, time.monotonic()
        self.busy = False  # it has sent a whole frame: never evicted from then on

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes its thread out of recv
        except OSError:
            pass


class StepSocket:
    def __init__(self, rt: Node2Runtime, host: str, port: int):
        self.rt = rt
        self.listener = socket.create_server((host, port), backlog=MAX_CONNECTIONS)
        self.port = self.listener.getsockname()[1]
        self.connections: list[_Connection] = []
        self.lock = threading.Lock()
        self.closed = False

    def start(self) -> "StepSocket":
        threading.Thread(target=self._accept, name="node2-step-accept", daemon=True).start()
        log.info("step socket listening on port %d", self.port)
        return self

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        with self.lock:
            for conn in self.connections:
                conn.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                sock, _ = self.listener.accept()
            except OSError as exc:
                if not self.closed:  # out of descriptors, a connection reset before accept: not fatal
                    log.warning("step socket accept failed: %s", type(exc).__name__)
                    time.sleep(0.1)
                continue
            conn = _Connection(sock)
            if self._admit(conn):
                threading.Thread(target=self._serve, args=(conn,), name="node2-step", daemon=True).start()
            else:
                sock.close()

    def _admit(self, conn: _Connection) -> bool:
        with self.lock:
            if len(self.connections) >= MAX_CONNECTIONS:
                idle = [c for c in self.connections if not c.busy]
                if not idle:
                    self.rt.metrics.step_socket.labels(event="refused").inc()
                    return False
                oldest = min(idle, key=lambda c: c.opened)
                self.rt.metrics.step_socket.labels(event="evicted").inc()
                self.connections.remove(oldest)
                oldest.close()
            self.connections.append(conn)
            return True

    def _serve(self, conn: _Connection) -> None:
        sock = conn.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            first = True
            while True:
                frame = self._read_frame(conn, first)
                conn.busy, first = True, False
                status, body = self._answer(frame)
                sock.settimeout(FRAME_S)  # a peer that stops reading cannot hold the thread either
                sock.sendall(step_stream.reply_record(status, body))
                if status != 200:
                    return
        except (StreamClosed, OSError):
            return  # closed, too slow or too long: nothing was applied from a frame not read whole
        finally:
            with self.lock:
                if conn in self.connections:
                    self.connections.remove(conn)
            sock.close()

    def _read_frame(self, conn: _Connection, first: bool) -> bytes:
        wait = conn.opened + FIRST_FRAME_S if first else time.monotonic() + IDLE_S
        (n,) = step_stream.REQUEST.unpack(step_stream.read_exact(conn.sock, step_stream.REQUEST.size, wait))
        if n > step_stream.MAX_FRAME_BYTES:
            conn.sock.settimeout(FRAME_S)
            conn.sock.sendall(step_stream.reply_record(413, step_stream.error_body(
                f"a frame on the step socket is at most {step_stream.MAX_FRAME_BYTES} bytes; send longer ones over HTTP")))
            raise StreamClosed("frame too long")
        return step_stream.read_exact(conn.sock, n, wait if first else time.monotonic() + FRAME_S)

    def _answer(self, frame: bytes) -> tuple[int, bytes]:
        try:
            return 200, run_step(self.rt.require_ready(), frame)
        except (StepRefused, ApiError) as exc:
            return exc.status, step_stream.error_body(str(exc))
        except Exception as exc:  # noqa: BLE001 - as the HTTP route's handler: the type only, never content
            log.error("unhandled %s on the step socket", type(exc).__name__)
            return 500, step_stream.error_body("internal error")
