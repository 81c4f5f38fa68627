"""The mutual attested handshake that turns both nodes' verified evidence into one channel's keys.

Three messages, plain JSON-able dicts (the caller carries them over HTTP):

    m1  initiator -> responder  {version, role, nonce, public_key}
    m2  responder -> initiator  {handshake_id, role, nonce, public_key, evidence over (pub_r, nonce_i)}
    m3  initiator -> responder  {handshake_id, evidence over (pub_i, nonce_r)}

Each side appraises the other's evidence before it derives anything; keys come from X25519 and
HKDF-SHA256 salted with a hash of the whole transcript, so any change to any message changes the keys.
"""
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from attestation.binding import NONCE_BYTES, report_data
from attestation.errors import AttestationError
from attestation.canonical import canonical_json

VERSION = "twintee-handshake/1"
PUBLIC_KEY_BYTES = 32
HANDSHAKE_ID_BYTES = 16
CHANNEL_ID_BYTES = 16
KEY_BYTES = 32  # AES-256-GCM
# One label per derived secret, so no secret can stand in for another.
INFO_CHANNEL_ID = b"twintee/channel/v1/channel-id"
INFO_I2R = b"twintee/channel/v1/key/i2r"
INFO_R2I = b"twintee/channel/v1/key/r2i"
MAX_ROLE_CHARS = 64
_HEX = frozenset("0123456789abcdef")

Attester = Callable[[bytes], dict]  # report data (64 bytes) -> evidence
Appraise = Callable[[dict, str, bytes], dict]  # (evidence, expected role, expected report data) -> verdict


class HandshakeError(AttestationError):
    """The handshake was refused; `check` names the failed step and no key was derived."""


@dataclass(frozen=True)
class ChannelKeys:
    """One channel's secrets, one AES-256-GCM key per direction, and what we concluded about the peer."""

    channel_id: bytes
    i2r_key: bytes = field(repr=False)  # keys stay out of reprs so they cannot reach a log line
    r2i_key: bytes = field(repr=False)
    peer_verdict: dict
    created_at: float  # wall-clock seconds, for /health; channel age is measured on a monotonic clock


# --- Message parsing: everything from the peer is checked before use ------------------------


def _hex(n: int) -> Callable[[str, object], bytes]:
    def parse(name: str, value: object) -> bytes:
        # Lowercase only: one spelling per value, so the canonical transcript is the same on both sides.
        if not (isinstance(value, str) and len(value) == 2 * n and set(value) <= _HEX):
            raise HandshakeError("malformed", f"{name} must be {n} bytes as lowercase hex")
        return bytes.fromhex(value)

    return parse


def _role(name: str, value: object) -> str:
    if not (isinstance(value, str) and 0 < len(value) <= MAX_ROLE_CHARS):
        raise HandshakeError("malformed", f"{name} must be a short string")
    return value


def _evidence(name: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise HandshakeError("malformed", f"{name} must be an object")
    return value


def _version(name: str, value: object) -> str:
    if value != VERSION:
        raise HandshakeError("version", "unsupported handshake version")
    return value


M1_FIELDS = {"version": _version, "role": _role, "nonce": _hex(NONCE_BYTES),
             "public_key": _hex(PUBLIC_KEY_BYTES)}
M2_FIELDS = {"handshake_id": _hex(HANDSHAKE_ID_BYTES), "role": _role, "nonce": _hex(NONCE_BYTES),
             "public_key": _hex(PUBLIC_KEY_BYTES), "evidence": _evidence}
M3_FIELDS = {"handshake_id": _hex(HANDSHAKE_ID_BYTES), "evidence": _evidence}


def _parse(message: object, spec: dict) -> dict:
    """-> the message's fields, decoded; unknown or missing fields are refused, not ignored."""
    if not isinstance(message, dict) or set(message) != set(spec):
        raise HandshakeError("malformed", f"expected exactly the fields {sorted(spec)}")
    return {name: parse(name, message[name]) for name, parse in spec.items()}


def _expect_role(claimed: str, expected: str) -> None:
    if claimed != expected:
        raise HandshakeError("role", f"peer claims role {claimed!r}, expected {expected!r}")


# --- Appraisal and key derivation ------------------------------------------------------------


def _appraised(appraise: Appraise, evidence: dict, role: str, expected_report_data: bytes) -> dict:
    try:
        return appraise(evidence, role, expected_report_data)
    except HandshakeError:
        raise
    except AttestationError as exc:
        raise HandshakeError(exc.check, exc.detail) from exc


def _public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # cryptography refuses low-order points (all-zero shared secret)
        raise HandshakeError("key_exchange", "peer public key is unusable") from exc


def _derive(shared: bytes, transcript: bytes, verdict: dict) -> ChannelKeys:
    salt = hashlib.sha256(transcript).digest()

    def expand(info: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(shared)

    return ChannelKeys(channel_id=expand(INFO_CHANNEL_ID, CHANNEL_ID_BYTES),
                       i2r_key=expand(INFO_I2R, KEY_BYTES), r2i_key=expand(INFO_R2I, KEY_BYTES),
                       peer_verdict=verdict, created_at=time.time())


# --- The two sides ---------------------------------------------------------------------------


class Initiator:
    """node1's side: one instance per handshake; `hello()` then `finish(m2)`, each once."""

    def __init__(self, my_role: str, peer_role: str, attester: Attester, appraise: Appraise):
        self.my_role, self.peer_role = my_role, peer_role
        self._attester, self._appraise = attester, appraise
        self._private: X25519PrivateKey | None = None
        self._nonce = b""
        self._m1 = b""  # canonical m1 as sent

    def hello(self) -> dict:
        if self._m1:
            raise HandshakeError("state", "hello was already sent; start a new Initiator")
        self._private = X25519PrivateKey.generate()  # fresh per handshake: no long-term DH key exists
        self._nonce = secrets.token_bytes(NONCE_BYTES)
        m1 = {"version": VERSION, "role": self.my_role, "nonce": self._nonce.hex(),
              "public_key": _public_bytes(self._private).hex()}
        self._m1 = canonical_json(m1)
        return m1

    def finish(self, m2: object) -> tuple[dict, ChannelKeys]:
        """Appraises the responder, and only then attests itself in m3. -> (m3, keys)."""
        private, self._private = self._private, None  # one-shot, whatever the outcome
        if private is None:
            raise HandshakeError("state", "no hello pending (not sent, or finish already called)")
        fields = _parse(m2, M2_FIELDS)
        _expect_role(fields["role"], self.peer_role)
        verdict = _appraised(self._appraise, fields["evidence"], self.peer_role,
                             report_data(fields["public_key"], self._nonce))
        shared = _exchange(private, fields["public_key"])
        m3 = {"handshake_id": m2["handshake_id"],
              "evidence": self._attester(report_data(_public_bytes(private), fields["nonce"]))}
        return m3, _derive(shared, self._m1 + canonical_json(m2) + canonical_json(m3), verdict)


@dataclass
class _Pending:
    m1: bytes  # canonical m1 as received
    m2: bytes  # canonical m2 as sent
    peer_public: bytes
    nonce: bytes  # our nonce, which the initiator's evidence must bind
    private: X25519PrivateKey
    created: float


class Responder:
    """node2's side: serves many handshakes; `respond(m1)` then `finish(m3)` once per handshake_id."""

    def __init__(self, my_role: str, peer_role: str, attester: Attester, appraise: Appraise, *,
                 ttl_s: float = 30.0, max_pending: int = 64, max_seen_nonces: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.my_role, self.peer_role = my_role, peer_role
        self._attester, self._appraise = attester, appraise
        self._ttl_s, self._max_pending, self._max_seen = ttl_s, max_pending, max_seen_nonces
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def respond(self, m1: object) -> dict:
        fields = _parse(m1, M1_FIELDS)
        _expect_role(fields["role"], self.peer_role)
        self._remember_nonce(fields["nonce"])
        private = X25519PrivateKey.generate()
        public, nonce = _public_bytes(private), secrets.token_bytes(NONCE_BYTES)
        m2 = {"handshake_id": secrets.token_hex(HANDSHAKE_ID_BYTES), "role": self.my_role,
              "nonce": nonce.hex(), "public_key": public.hex(),
              "evidence": self._attester(report_data(public, fields["nonce"]))}
        self._store(m2["handshake_id"], _Pending(canonical_json(m1), canonical_json(m2), fields["public_key"],
                                                  nonce, private, self._clock()))
        return m2

    def finish(self, m3: object) -> ChannelKeys:
        """Appraises the initiator's evidence over (its key, our nonce); keys only if it passes."""
        fields = _parse(m3, M3_FIELDS)
        pending = self._take(m3["handshake_id"])
        verdict = _appraised(self._appraise, fields["evidence"], self.peer_role,
                             report_data(pending.peer_public, pending.nonce))
        shared = _exchange(pending.private, pending.peer_public)
        return _derive(shared, pending.m1 + pending.m2 + canonical_json(m3), verdict)

    def _remember_nonce(self, nonce: bytes) -> None:
        # Bounded: forgetting the oldest nonces is safe because a replayed m1 still cannot finish:
        # m3 needs fresh evidence over the new responder nonce, which only the real initiator makes.
        with self._lock:
            if nonce in self._seen:
                raise HandshakeError("replay", "this m1 nonce was already used")
            self._seen[nonce] = None
            while len(self._seen) > self._max_seen:
                self._seen.popitem(last=False)

    def _store(self, handshake_id: str, pending: _Pending) -> None:
        with self._lock:
            self._drop_expired()
            # Unauthenticated m1s can fill the table; evicting the oldest keeps a real peer's retry working.
            while len(self._pending) >= self._max_pending:
                self._pending.popitem(last=False)
            self._pending[handshake_id] = pending

    def _take(self, handshake_id: str) -> _Pending:
        with self._lock:
            pending = self._pending.pop(handshake_id, None)  # one-shot: a replayed m3 finds nothing
            self._drop_expired()
        if pending is None:
            raise HandshakeError("unknown_handshake", "no pending handshake with this id")
        if self._clock() - pending.created > self._ttl_s:
            raise HandshakeError("expired", "the handshake took longer than its time to live")
        return pending

    def _drop_expired(self) -> None:
        now = self._clock()
        for handshake_id in [h for h, p in self._pending.items() if now - p.created > self._ttl_s]:
            del self._pending[handshake_id]
