"""The broker's challenge nonces: issued here, single-use, short-lived, and bounded in number."""
import os
import threading
import time
from typing import Callable

NONCE_BYTES = 32


class NonceError(Exception):
    """A presented nonce is not acceptable. `reason` is one of: unknown, replayed, expired."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class NonceStoreFull(Exception):
    """Too many nonces are outstanding; refuse new ones rather than evict live ones."""


class NonceStore:
    """nonce -> (expiry, used). Used nonces are kept until expiry so a replay is named as one."""

    def __init__(self, ttl_seconds: float, capacity: int,
                 clock: Callable[[], float] = time.monotonic):
        self._ttl, self._capacity, self._clock = ttl_seconds, capacity, clock
        self._entries: dict[bytes, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        for nonce in [n for n, (expiry, _) in self._entries.items() if expiry <= now]:
            del self._entries[nonce]

    def issue(self) -> bytes:
        with self._lock:
            now = self._clock()
            self._purge(now)
            if len(self._entries) >= self._capacity:
                raise NonceStoreFull(f"{len(self._entries)} nonces outstanding")
            nonce = os.urandom(NONCE_BYTES)
            self._entries[nonce] = (now + self._ttl, False)
            return nonce

    def consume(self, nonce: bytes) -> None:
        """Mark nonce used; raises NonceError unless it was issued here, is fresh and unused."""
        with self._lock:
            now = self._clock()
            entry = self._entries.get(nonce)
            if entry is None:
                raise NonceError("unknown", "nonce was not issued by this broker or has expired")
            expiry, used = entry
            if used:
                raise NonceError("replayed", "nonce was already used")
            if expiry <= now:
                del self._entries[nonce]
                raise NonceError("expired", "nonce is older than its time to live")
            self._entries[nonce] = (expiry, True)
