"""node2's state: loading -> ready | failed, its engine, its identity and its channels from node1."""
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from attestation.errors import AttestationError
from attestation.service import ApiError
from node2.config import Node2Config
from node2.engine import Engine
from shared.channel import SealedChannel
from shared.handshake import Responder
from shared.identity import open_release
from shared.loading import load_part
from shared.metrics import NodeMetrics

log = logging.getLogger("twintee.node2")
MAX_CHANNELS = 8


@dataclass
class PeerChannel:
    """A channel from node1 and the lock that keeps open -> step -> seal of its frames in sequence."""

    chan: SealedChannel
    lock: threading.Lock = field(default_factory=threading.Lock)


class Node2Runtime:
    def __init__(self, config: Node2Config, open_shard=None):
        self.config, self.open_shard = config, open_shard
        self.state, self.reason = "loading", "loading model"
        self.release = self.identity = self.engine = self.responder = None
        # node1 keeps one channel per pipeline slot; each has its own keys and sequence numbers.
        self.channels: OrderedDict[str, PeerChannel] = OrderedDict()
        self.verified_peer: dict | None = None  # node1's verdict when its last channel was set up
        self.refusal: dict = {"verified": False, "detail": "node1 has not handshaken yet"}
        self.load_stats: dict = {}
        self.channels_lock = threading.Lock()
        self.metrics = NodeMetrics("node2")

    def start(self) -> "Node2Runtime":
        threading.Thread(target=self._load, name="node2-load", daemon=True).start()
        return self

    def _waiting(self, reason: str) -> None:
        self.reason = reason  # /health says why it is still loading (the broker is retried)

    def _load(self) -> None:
        try:
            if self.config.model.threads:
                torch.set_num_threads(self.config.model.threads)
            self.release, self.identity, opener = open_release("node2", self.config.tee, self._waiting)
            part, self.load_stats = load_part(self.release, "node2", self.config.model, self.open_shard or opener)
            self.engine = Engine(part, self.config.model, max_sessions=self.config.max_sessions,
                                 idle_s=self.config.session_idle_s)
            self.responder = Responder("node2", "node1", self.identity.evidence, self.identity.appraise)
            self.state, self.reason = "ready", "ready"
            log.info("node2 ready: layers %s, weights %d bytes, load %.2fs",
                     self.release.layers_of("node2"), self.load_stats["weight_bytes"], self.load_stats["load_s"])
        except Exception as exc:  # noqa: BLE001 - any load failure is reported by /health, not raised
            self.state, self.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.error("node2 failed to load: %s", self.reason)

    def require_ready(self) -> "Node2Runtime":
        """Itself once loaded; else ApiError 503 naming why (every route and the step socket ask this)."""
        if self.state != "ready":
            raise ApiError(503, f"node2 is not ready: {self.reason}")
        return self

    @property
    def peer(self) -> dict:
        """What /health says of node1: the verified node1 while it holds a channel, else why the last
        handshake was refused. Anyone can post a junk finish; it must not flip a live peer's verdict."""
        with self.channels_lock:
            live = bool(self.channels)
        return self.verified_peer if live and self.verified_peer else self.refusal

    def handshake_hello(self, m1: dict) -> dict:
        return self.responder.respond(m1)

    def handshake_finish(self, m3: dict) -> dict:
        """-> m4, our key confirmation. A channel exists only once node1 has confirmed its keys."""
        try:
            keys, m4 = self.responder.finish(m3)
        except AttestationError as exc:
            self.metrics.handshakes.labels(outcome="refused").inc()
            self.refusal = {"verified": False, "failed": exc.check, "detail": str(exc), "at": time.time()}
            log.warning("refused node1's evidence: %s", exc)
            raise
        tee = self.config.tee
        chan = SealedChannel(keys, "responder", max_frames=tee.rekey_frames, max_age_s=tee.rekey_seconds)
        with self.channels_lock:
            self.channels[chan.channel_id] = PeerChannel(chan)
            while len(self.channels) > MAX_CHANNELS:  # channels node1 re-keyed away from
                self.channels.popitem(last=False)
        self.metrics.handshakes.labels(outcome="ok").inc()
        self.verified_peer = {"verified": True, "verdict": keys.peer_verdict, "since": time.time()}
        log.info("channel %s established with node1", chan.channel_id[:8])
        return m4

    def channel_for(self, channel_id) -> "PeerChannel | None":
        with self.channels_lock:
            return self.channels.get(channel_id) if isinstance(channel_id, str) else None
