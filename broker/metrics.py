"""Prometheus metrics of the broker: counts only, never request content or key material."""
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class BrokerMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("twintee_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        # Refusals before any evidence verified: anyone can send them, so they are counted here
        # instead of costing an fsynced audit line each (issue 12).
        self.junk = Counter("twintee_broker_junk_key_requests", "key requests refused before any evidence verified, "
                            "by the check that failed (not in the audit log)", ["check"], registry=r)
        self.nonces = Gauge("twintee_broker_outstanding_nonces", "nonces issued and not yet expired", registry=r)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
