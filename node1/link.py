"""node1's one link to node2: the attested handshake over HTTP, then sealed step frames over node2's
step socket (node1/node2_stream.py), or over HTTP's keep-alive connection when the socket is off,
unreachable or the frame too long for it.

Frames on a channel must arrive in sequence, so one lock covers seal -> send -> open.
"""
import threading
import time

from attestation.errors import AttestationError
from node1.config import step_address
from node1.node2_http import Node2Http, Node2Unreachable, json_or_empty
from node1.node2_stream import Node2Stream
from shared import wire
from shared.channel import FrameRejected, SealedChannel
from shared.handshake import Initiator


HEALTH_TIMEOUT_S = 2.0
CHANNEL_GONE = 409  # node2: no such channel, or it expired; the step was not applied


class LinkError(RuntimeError):
    """node2 could not be reached or refused us; `public_message` is safe to show a client."""

    def __init__(self, public_message: str):
        super().__init__(public_message)
        self.public_message = public_message


class Node2Link:
    def __init__(self, node2_url: str, attester, appraise, *, rekey_frames: int, rekey_seconds: float,
                 timeout: float = 120.0, metrics=None, step_url: str = ""):
        self.url = node2_url.rstrip("/")
        self.attester, self.appraise = attester, appraise
        self.rekey_frames, self.rekey_seconds, self.timeout = rekey_frames, rekey_seconds, timeout
        self.http = Node2Http(self.url, timeout)  # one keep-alive connection for every call to node2
        self.health_http = Node2Http(self.url, HEALTH_TIMEOUT_S)  # /health runs outside the lock
        self.stream = Node2Stream(*step_address(step_url), timeout) if step_url else None
        self.lock = threading.Lock()
        self.health_lock = threading.Lock()
        self.channel: SealedChannel | None = None
        self.peer_verdict: dict | None = None
        self.state = "not connected"
        self.metrics = metrics

    @property
    def ready(self) -> bool:
        return self.channel is not None

    def connect(self) -> bool:
        """Handshakes if there is no live channel; returns whether one is up. Never raises."""
        with self.lock:
            try:
                self._ensure_channel()
                return True
            except LinkError:
                return False

    def exchange(self, header: dict, body: bytes) -> tuple[dict, bytes]:
        with self.lock:
            self._ensure_channel()
            t0 = time.perf_counter()
            frame = self.channel.seal(header, body)
            status, content = self._post_step(frame)
            if status == CHANNEL_GONE:
                # node2 no longer holds this channel (it restarted, or the channel reached its limit)
                # and applied nothing: handshake again and send the step once more.
                self._drop("re-handshaking: node2 dropped the channel")
                self._ensure_channel()
                frame = self.channel.seal(header, body)
                status, content = self._post_step(frame)
            if status != 200:
                self._drop(f"node2 refused a frame ({status})")
                raise LinkError(f"node2 refused the step: {_error_of(status, content)}")
            try:
                reply, plain = self.channel.open(content)
            except (FrameRejected, wire.WireError) as exc:
                self._drop("reply frame rejected")
                raise LinkError(f"node2's reply was rejected ({exc})") from None
            if self.metrics:
                self.metrics.link_seconds.observe(time.perf_counter() - t0)
                self.metrics.wire_bytes.labels(direction="sent").inc(len(frame))
                self.metrics.wire_bytes.labels(direction="received").inc(len(content))
            return reply, plain

    def _post_step(self, frame: bytes) -> tuple[int, bytes]:
        if self.stream is not None and self.stream.carries(frame):
            try:
                reply = self.stream.exchange(frame)
                self._count("socket")
                return reply
            except Node2Unreachable:
                # Sent again over HTTP: node2 either never applied it or refuses the copy as a replay,
                # which drops the channel and replays the session (as a lost HTTP reply does).
                pass
        self._count("http")
        try:
            return self.http.post("/v1/step", frame, wire.CONTENT_TYPE)
        except Node2Unreachable:
            self._drop("node2 unreachable")
            raise LinkError("node2 unreachable") from None

    def _count(self, transport: str) -> None:
        if self.metrics:
            self.metrics.link_frames.labels(transport=transport).inc()

    def _ensure_channel(self) -> None:
        # Renewed before either side's limit, so a stream in flight never meets an expired channel.
        if self.channel is not None and not self.channel.renew_due:
            return
        try:
            self._handshake()
        except Node2Unreachable:
            self._drop("node2 unreachable")
            raise LinkError("node2 unreachable") from None
        except AttestationError as exc:
            self._drop(f"node2 failed attestation: {exc}")
            raise LinkError(f"node2 failed attestation ({exc.check})") from None

    def _handshake(self) -> None:
        init = Initiator("node1", "node2", self.attester, self.appraise)
        m2 = self._post_json("/v1/handshake/hello", init.hello())
        m3, keys = init.finish(m2)
        init.confirm(self._post_json("/v1/handshake/finish", m3))  # node2 proves it holds the same keys
        self.channel = SealedChannel(keys, "initiator", max_frames=self.rekey_frames, max_age_s=self.rekey_seconds)
        self.peer_verdict = keys.peer_verdict
        if self.metrics:
            self.metrics.handshakes.labels(outcome="ok").inc()
        self.state = "ready"

    def _post_json(self, path: str, payload: dict) -> dict:
        status, body = self.http.post_json(path, payload, timeout=30)
        if status != 200:
            # node2 names which of our checks failed; keep it for /health, never content.
            raise AttestationError("peer", f"node2 refused the handshake: {body.get('error', status)}")
        return body

    def _drop(self, state: str) -> None:
        self.channel = None
        self.state = state

    def check_peer(self) -> None:
        """Drops the channel when node2 is gone or no longer holds it (it restarted), so we re-handshake."""
        health = self.node2_health()
        with self.lock:
            if self.channel is None:
                return
            if health is None:
                self._drop("node2 unreachable")
            elif self.channel.channel_id not in health.get("channels", []):
                self._drop("node2 restarted; re-handshaking")

    def node2_health(self) -> dict | None:
        with self.health_lock:
            return self.health_http.get_json("/health", HEALTH_TIMEOUT_S) or None


def _error_of(status: int, content: bytes) -> str:
    return str(json_or_empty(content).get("error", status))
