"""Holds each tenant to its policy: requests and tokens per minute, tokens per UTC day, requests at
once, max tokens per request, allowed models. Token sums come from the ledger, so they are exact and
shared by every replica on one database; requests per minute and at once are counted per process."""
import math
import threading
import time
from collections import defaultdict, deque

from node1.ledger import DAY_S, Ledger, utc_day_start
from node1.tenants import Tenant

MINUTE = 60.0


class QuotaExceeded(Exception):
    """Over a rate limit (-> 429 with Retry-After): waiting `retry_after` seconds helps."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class PolicyRefused(Exception):
    """Outside what the tenant may ask at all (a model, a max_tokens): retrying cannot help (-> 403)."""

    def __init__(self, message: str, param: str, code: str):
        super().__init__(message)
        self.param, self.code = param, code


class Quotas:
    def __init__(self, ledger: Ledger, clock=time.time):
        self.ledger, self.clock = ledger, clock
        self._lock = threading.Lock()
        self._recent: dict[str, deque] = defaultdict(deque)  # tenant -> times of its requests this minute
        self._running: dict[str, int] = defaultdict(int)

    def check_request(self, tenant: Tenant, model: str | None, max_tokens: int | None) -> None:
        """What a generation asks for, against what the tenant may ask (PolicyRefused)."""
        p = tenant.policy
        if model is not None and p.models and model not in p.models:
            raise PolicyRefused(f"this key may not use model {model!r}", "model", "model_not_allowed")
        if max_tokens is not None and p.max_tokens and max_tokens > p.max_tokens:
            raise PolicyRefused(f"max_tokens {max_tokens} is over this key's limit of {p.max_tokens}",
                                "max_tokens", "max_tokens_over_limit")

    def acquire(self, tenant: Tenant, generation: bool) -> None:
        """Counts one authenticated request, or raises QuotaExceeded; a generation also takes one of
        the tenant's concurrent slots, which `release` gives back."""
        p, now = tenant.policy, self.clock()
        if generation:
            self._tokens(tenant, now)
        with self._lock:
            recent = self._recent[tenant.name]
            while recent and recent[0] <= now - MINUTE:
                recent.popleft()
            if p.rpm and len(recent) >= p.rpm:
                raise QuotaExceeded(f"rate limit: {p.rpm} requests per minute", recent[0] + MINUTE - now)
            if generation and p.max_concurrent and self._running[tenant.name] >= p.max_concurrent:
                raise QuotaExceeded(f"rate limit: {p.max_concurrent} requests at once", 1)
            recent.append(now)
            if generation:
                self._running[tenant.name] += 1

    def release(self, tenant: Tenant) -> None:
        with self._lock:
            self._running[tenant.name] -= 1

    def _tokens(self, tenant: Tenant, now: float) -> None:
        p = tenant.policy
        if p.tpm:
            used, _ = self.ledger.tokens_since(tenant.name, now - MINUTE)
            if used >= p.tpm:
                leaves = self.ledger.oldest_to_leave(tenant.name, now - MINUTE, used - p.tpm + 1)
                raise QuotaExceeded(f"rate limit: {p.tpm} tokens per minute", (leaves or now) + MINUTE - now)
        if p.tokens_per_day:
            start = utc_day_start(now)
            used, _ = self.ledger.tokens_since(tenant.name, start)
            if used >= p.tokens_per_day:
                raise QuotaExceeded(f"rate limit: {p.tokens_per_day} tokens per day (UTC)", start + DAY_S - now)
