"""Challenge nonces a verifier issues: single-use, short-lived, and bounded in number.

One store with the behaviour a hostile network needs (issue 12): when full it refuses new nonces
rather than evicting outstanding ones, so a flood of challenges from outsiders can delay a genuine
party by at most one time to live but can never invalidate the nonce it is answering. Used nonces
are kept until they expire, so a replay is named as one.
"""
import secrets
import threading
import time
from collections import OrderedDict
from typing import Callable

from attestation.binding import NONCE_BYTES
from attestation.errors import AttestationError

REASONS = ("unknown", "replayed", "expired")


class NonceError(AttestationError):
    """A presented nonce is not acceptable; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__("nonce", f"{reason}: {detail}")
        self.reason = reason


class NonceStoreFull(Exception):
    """Too many nonces are outstanding; refuse new ones rather than evict live ones."""


class NonceStore:
    """nonce -> (expiry, used), oldest first: every entry lives exactly `ttl_seconds`, so the
    expired ones are always at the front and purging costs only what it removes."""

    def __init__(self, ttl_seconds: float, capacity: int, clock: Callable[[], float] = time.monotonic):
        self._ttl, self._capacity, self._clock = ttl_seconds, capacity, clock
        self._entries: OrderedDict[bytes, tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def issue(self) -> bytes:
        with self._lock:
            now = self._clock()
            self._purge(now)
            if len(self._entries) >= self._capacity:
                raise NonceStoreFull(f"{len(self._entries)} nonces outstanding")
            nonce = secrets.token_bytes(NONCE_BYTES)
            self._entries[nonce] = (now + self._ttl, False)
            return nonce

    def consume(self, nonce: bytes) -> None:
        """Marks `nonce` used; raises NonceError unless it was issued here, is fresh and unused."""
        with self._lock:
            now = self._clock()
            entry = self._entries.get(bytes(nonce)) if isinstance(nonce, (bytes, bytearray)) else None
            if entry is None:
                raise NonceError("unknown", "nonce was not issued by this broker or has expired")
            expiry, used = entry
            if used:
                raise NonceError("replayed", "nonce was already used")
            if expiry <= now:
                del self._entries[nonce]
                raise NonceError("expired", "nonce is older than its time to live")
            self._entries[nonce] = (expiry, True)  # keeps its place: insertion order is expiry order

    def _purge(self, now: float) -> None:
        while self._entries:
            nonce, (expiry, _) = next(iter(self._entries.items()))
            if expiry > now:
                return
            del self._entries[nonce]
