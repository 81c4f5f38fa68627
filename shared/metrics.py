"""Prometheus metrics of one node process: counts, latencies and sizes only, never content."""
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)


class NodeMetrics:
    def __init__(self, role: str):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("twintee_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.ttft = Histogram("twintee_ttft_seconds", "time to first token", buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("twintee_inter_token_seconds", "time between tokens of a stream", buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("twintee_tokens_generated", "tokens produced", registry=r)
        self.tokens_per_sec = Gauge("twintee_tokens_per_second", "aggregate decode rate over the last step", registry=r)
        self.sessions = Gauge("twintee_active_sessions", "sessions holding a KV cache", registry=r)
        self.batch = Gauge("twintee_batch_size", "sequences in the last step", registry=r)
        self.kv_bytes = Gauge("twintee_kv_cache_bytes", "bytes held by KV caches", registry=r)
        self.handshakes = Counter("twintee_handshakes", "attested handshakes by outcome", ["outcome"], registry=r)
        self.replays = Counter("twintee_session_replays", "sessions replayed into a restarted or lost node2", registry=r)
        self.frames_rejected = Counter("twintee_frames_rejected", "sealed frames rejected, by reason", ["reason"], registry=r)
        self.link_seconds = Histogram("twintee_link_roundtrip_seconds", "node1: seal + send + node2 + open, per step",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.link_frames = Counter("twintee_link_frames", "node1: step frames sent, by transport (socket or http)",
                                   ["transport"], registry=r)
        self.step_socket = Counter("twintee_step_socket_connections", "node2: step socket connections turned away, "
                                   "by event (evicted: never sent a frame; refused: every slot busy)", ["event"], registry=r)
        self.wire_bytes = Counter("twintee_wire_bytes", "sealed frame bytes by direction", ["direction"], registry=r)
        self.step_seconds = Histogram("twintee_step_seconds", "one batched step on this node", buckets=LATENCY_BUCKETS, registry=r)
        Gauge("twintee_info", "node role", ["role"], registry=r).labels(role=role).set(1)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
