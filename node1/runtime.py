"""node1's state: loading -> ready | failed, its part of the model, and its pipeline slots to node2.

Each slot is a scheduler with its own sealed channel: while one slot waits for node2, another runs
node1's layers, so the two nodes compute different micro-batches at the same time.
"""
import logging
import secrets
import threading

import torch

from attestation.hardening import process_hardening
from attestation.manifest import ManifestError
from attestation.service import ApiError
from node1.config import Node1Config
from node1.link import Node2Link
from node1.scheduler import InFlight, Scheduler
from node1.text import TextCodec
from shared.identity import open_release
from shared.linear import compute_report
from shared.loading import load_part, tokenizer_digest
from shared.metrics import NodeMetrics

log = logging.getLogger("twintee.node1")
RECONNECT_S = 2.0
RETRY_AFTER_S = 2  # what a client at capacity is told to wait
ADMIT_WAIT_S, ADMIT_WAITERS = 2.0, 8  # a short, bounded wait for a slot before that 503


class Node1Runtime:
    def __init__(self, config: Node1Config, open_shard=None):
        self.config, self.open_shard = config, open_shard
        self.state, self.reason = "loading", "loading model"
        self.release = self.identity = self.codec = None
        self.links: list[Node2Link] = []
        self.slots: list[Scheduler] = []
        self.load_stats: dict = {}
        self.metrics = NodeMetrics("node1")
        self.stopped = threading.Event()
        self.capacity = threading.BoundedSemaphore(config.max_concurrent)
        self.waiters = threading.BoundedSemaphore(ADMIT_WAITERS)

    def start(self) -> "Node1Runtime":
        threading.Thread(target=self._run, name="node1-load", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            self._load()
        except Exception as exc:  # noqa: BLE001 - reported through /health
            self.state, self.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.error("node1 failed to load: %s", self.reason)
            return
        # Keep every channel to node2 up: re-handshake whenever node2 restarts or keys expire.
        while not self.stopped.wait(RECONNECT_S if self.links_ready else 0):
            for link in self.links:
                if link.ready:
                    link.check_peer()
                if not link.ready and not link.connect():
                    self.stopped.wait(RECONNECT_S)

    @property
    def link(self) -> Node2Link:
        """The first slot's link: the one used for node2's attestation relay."""
        return self.links[0]

    @property
    def links_ready(self) -> bool:
        return all(link.ready for link in self.links)

    def refresh_gauges(self) -> None:
        """The gauges, summed over the pipeline slots when /metrics is read: right as soon as the last
        session leaves (issue 13: a step-time gauge showed 16 sessions and 445 MiB with none left)."""
        batch = sum(s.batch_size for s in self.slots)
        self.metrics.batch.set(batch)
        self.metrics.sessions.set(batch)
        self.metrics.kv_bytes.set(sum(s.kv_bytes for s in self.slots))

    def submit(self, gen):
        """Hands a generation to the least loaded slot, if node1 has room for one more (else 503 with
        Retry-After: new work beyond capacity is refused at once, never queued without bound)."""
        if not self._admit():
            raise ApiError(503, f"node1 is at capacity ({self.config.max_concurrent} generations); retry shortly",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        gen.on_done = self.capacity.release  # called once, when the scheduler retires it
        return min(self.slots, key=lambda s: s.load).submit(gen)

    def _admit(self) -> bool:
        """A capacity slot, waiting up to ADMIT_WAIT_S when there is none: a slot is given back a moment
        after a stream ends or its client drops, and a client that comes straight back should get it
        (issue 13's 32 clients on 32 slots saw 503s). At most ADMIT_WAITERS wait, each holding one of
        gunicorn's threads, so the control plane's threads are never all taken by waiters."""
        if self.capacity.acquire(blocking=False):
            return True
        if not self.waiters.acquire(blocking=False):
            return False
        try:
            return self.capacity.acquire(timeout=ADMIT_WAIT_S)
        finally:
            self.waiters.release()

    def _waiting(self, reason: str) -> None:
        self.reason = reason  # /health says why it is still loading (the broker is retried)

    def _load(self) -> None:
        if self.config.model.threads:
            torch.set_num_threads(self.config.model.threads)
        self.release, self.identity, opener = open_release("node1", self.config.tee, self._waiting)
        tokenizer_dir = self.release.model_dir / "tokenizer"
        if tokenizer_digest(tokenizer_dir) != self.release.manifest["tokenizer_sha256"]:
            raise ManifestError("tokenizer_mismatch", "the tokenizer differs from the signed manifest")
        self.codec = TextCodec(tokenizer_dir, self.release.config)
        tee = self.config.tee
        self.links = [Node2Link(self.config.node2_url, self.identity.evidence, self.identity.appraise,
                                rekey_frames=tee.rekey_frames, rekey_seconds=tee.rekey_seconds, metrics=self.metrics,
                                step_url=self.config.node2_step_url)
                      for _ in range(self.config.pipeline_slots)]
        # Attest to node2 before asking for weights: a node the release no longer covers is then
        # refused by its peer as well as by the broker, and both sides' /health say why.
        self.link.connect()
        part, self.load_stats = load_part(self.release, "node1", self.config.model, self.open_shard or opener)
        in_flight = InFlight()  # shared by the slots: a step alone in flight may use every core
        instance = secrets.token_hex(16)  # this process: node2 drops a previous node1's sessions on seeing it
        self.slots = [Scheduler(part, self.config.model, link, self.metrics, in_flight, instance,
                                self.config.node2_recovery_s).start() for link in self.links]
        for link in self.links[1:]:
            link.connect()
        self.state, self.reason = "ready", "ready"
        log.info("node1 loaded: layers %s, weights %d bytes, load %.2fs",
                 self.release.layers_of("node1"), self.load_stats["weight_bytes"], self.load_stats["load_s"])

    def health(self, probe: bool = True) -> tuple[dict, int]:
        if self.state != "ready":
            body = {"status": self.state, "role": "node1", "reason": self.reason}
            if self.links:
                body["node2"] = self.link.state
            return body, 503
        body = {"role": "node1", "model": self.release.model_id, "layers": self.release.layers_of("node1"),
                "node2": self.link.state, "batch": sum(s.batch_size for s in self.slots),
                "tee": self.identity.attester.tee_type, "measurement": self.identity.measurement["measurement"],
                "memory": self.load_stats, "compute": compute_report(self.config.model), "hardening": process_hardening()}
        # Serving needs one attested channel; a slot whose channel dropped re-handshakes when next used.
        if not any(link.ready for link in self.links):
            return {**body, "status": "unavailable", "reason": self.link.state}, 503
        if probe:  # ask now: a channel can outlive its peer by seconds, and a restarted node2 loads for a while
            peer = self.link.node2_health()
            if peer is None:
                return {**body, "status": "unavailable", "reason": "node2 unreachable"}, 503
            if peer.get("status") != "ok":
                return {**body, "status": "unavailable", "reason": f"node2 is {peer.get('status', 'not ready')}"}, 503
        return {**body, "status": "ok", "peer": self.link.peer_verdict}, 200
