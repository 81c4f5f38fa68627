"""node1's state: loading -> ready | failed, its part of the model, its link to node2 and its scheduler."""
import logging
import threading

import torch

from node1.config import Node1Config
from node1.link import Node2Link
from node1.scheduler import Scheduler
from node1.text import TextCodec
from shared.identity import open_release
from shared.loading import load_part
from shared.manifest import ManifestError
from shared.metrics import NodeMetrics
from shared.prepare import tokenizer_digest

log = logging.getLogger("twintee.node1")
RECONNECT_S = 2.0


class Node1Runtime:
    def __init__(self, config: Node1Config, open_shard=None):
        self.config, self.open_shard = config, open_shard
        self.state, self.reason = "loading", "loading model"
        self.release = self.identity = self.codec = self.link = self.scheduler = None
        self.load_stats: dict = {}
        self.metrics = NodeMetrics("node1")
        self.stopped = threading.Event()

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
        # Keep a channel to node2 up: re-handshake whenever node2 restarts or keys expire.
        while not self.stopped.wait(0 if not self.link.ready else RECONNECT_S):
            if self.link.ready:
                self.link.check_peer()
            if not self.link.ready and not self.link.connect():
                self.stopped.wait(RECONNECT_S)

    def _load(self) -> None:
        if self.config.model.threads:
            torch.set_num_threads(self.config.model.threads)
        self.release, self.identity, opener = open_release("node1", self.config.tee)
        tokenizer_dir = self.release.model_dir / "tokenizer"
        if tokenizer_digest(tokenizer_dir) != self.release.manifest["tokenizer_sha256"]:
            raise ManifestError("tokenizer_mismatch", "the tokenizer differs from the signed manifest")
        self.codec = TextCodec(tokenizer_dir, self.release.config)
        part, self.load_stats = load_part(self.release, "node1", self.config.model, self.open_shard or opener)
        tee = self.config.tee
        self.link = Node2Link(self.config.node2_url, self.identity.evidence, self.identity.appraise,
                              rekey_frames=tee.rekey_frames, rekey_seconds=tee.rekey_seconds, metrics=self.metrics)
        self.scheduler = Scheduler(part, self.config.model, self.link, self.metrics).start()
        self.state, self.reason = "ready", "ready"
        log.info("node1 loaded: layers %s, weights %d bytes, load %.2fs",
                 self.release.layers_of("node1"), self.load_stats["weight_bytes"], self.load_stats["load_s"])

    def health(self) -> tuple[dict, int]:
        if self.state != "ready":
            return {"status": self.state, "role": "node1", "reason": self.reason}, 503
        body = {"role": "node1", "model": self.release.model_id, "layers": self.release.layers_of("node1"),
                "node2": self.link.state, "batch": self.scheduler.batch_size,
                "tee": self.identity.attester.tee_type, "measurement": self.identity.measurement["measurement"],
                "memory": self.load_stats}
        if not self.link.ready:
            return {**body, "status": "unavailable", "reason": self.link.state}, 503
        return {**body, "status": "ok", "peer": self.link.peer_verdict}, 200
