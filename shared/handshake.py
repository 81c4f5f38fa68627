"""The mutual attested handshake that turns both nodes' verified evidence into one channel's keys.

Four messages, plain JSON-able dicts (the caller carries them over HTTP):

    m1  initiator -> responder  {version, role, nonce, public_key}
    m2  responder -> initiator  {handshake_id, role, nonce, public_key, evidence over (pub_r, nonce_i)}
    m3  initiator -> responder  {handshake_id, evidence over (pub_i, nonce_r), confirm}
    m4  responder -> initiator  {confirm}

Evidence is bound to the handshake's purpose (attestation/binding.py), so evidence a node gave a
client's challenge cannot stand in here. Each side appraises the other's evidence before it derives
anything; keys come from X25519 and HKDF-SHA256 salted with a hash of the transcript (m1, m2, and m3
without its confirm), so any change to any message changes the keys. Key confirmation: each side
proves it derived the same keys (an HMAC under a key of its own direction) before the other uses
the channel, so a party that relayed someone else's evidence, without the private key behind the
public key it sent, can never finish a handshake (issue 12).
"""
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from attestation.binding import NONCE_BYTES, PEER_HANDSHAKE, report_data
from attestation.errors import AttestationError
from attestation.canonical import canonical_json, hex_field

VERSION = "twintee-handshake/1"
PUBLIC_KEY_BYTES = 32
HANDSHAKE_ID_BYTES = 16
CHANNEL_ID_BYTES = 16
KEY_BYTES = 32  # AES-256-GCM
# One label per derived secret, so no secret can stand in for another.
INFO_CHANNEL_ID = b"twintee/channel/v1/channel-id"
INFO_I2R = b"twintee/channel/v1/key/i2r"
INFO_R2I = b"twintee/channel/v1/key/r2i"
INFO_CONFIRM_I = b"twintee/channel/v1/confirm/initiator"
INFO_CONFIRM_R = b"twintee/channel/v1/confirm/responder"
CONFIRM_BYTES = 32
MAX_ROLE_CHARS = 64

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
        raw = hex_field(value, n, lowercase=True)
        if raw is None:
            raise HandshakeError("malformed", f"{name} must be {n} bytes as lowercase hex")
        return raw

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
M3_FIELDS = {"handshake_id": _hex(HANDSHAKE_ID_BYTES), "evidence": _evidence, "confirm": _hex(CONFIRM_BYTES)}
M4_FIELDS = {"confirm": _hex(CONFIRM_BYTES)}


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


def _handshake_report_data(public_key: bytes, nonce: bytes) -> bytes:
    return report_data(public_key, nonce, purpose=PEER_HANDSHAKE)


@dataclass(frozen=True)
class _Confirmations:
    initiator: bytes = field(repr=False)  # what the initiator sends in m3
    responder: bytes = field(repr=False)  # what the responder sends in m4


def _derive(shared: bytes, transcript: bytes, verdict: dict) -> tuple[ChannelKeys, _Confirmations]:
    salt = hashlib.sha256(transcript).digest()

    def expand(info: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(shared)

    keys = ChannelKeys(channel_id=expand(INFO_CHANNEL_ID, CHANNEL_ID_BYTES),
                       i2r_key=expand(INFO_I2R, KEY_BYTES), r2i_key=expand(INFO_R2I, KEY_BYTES),
                       peer_verdict=verdict, created_at=time.time())
    # Each confirmation is a MAC of the transcript hash under its own derived key: only a party that
    # computed the shared secret can produce it, and neither direction's can stand in for the other's.
    confirm = {who: hmac.new(expand(info, KEY_BYTES), salt, hashlib.sha256).digest()
               for who, info in (("initiator", INFO_CONFIRM_I), ("responder", INFO_CONFIRM_R))}
    return keys, _Confirmations(**confirm)


def _check_confirmation(got: bytes, expected: bytes, who: str) -> None:
    if not hmac.compare_digest(got, expected):
        raise HandshakeError("key_confirmation", f"the {who} did not prove it holds the derived keys")


# --- The two sides ---------------------------------------------------------------------------


class Initiator:
    """node1's side: one instance per handshake; `hello()` then `finish(m2)`, each once."""

    def __init__(self, my_role: str, peer_role: str, attester: Attester, appraise: Appraise):
        self.my_role, self.peer_role = my_role, peer_role
        self._attester, self._appraise = attester, appraise
        self._private: X25519PrivateKey | None = None
        self._nonce = b""
        self._m1 = b""  # canonical m1 as sent
        self._expect_m4: bytes | None = None

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
                             _handshake_report_data(fields["public_key"], self._nonce))
        shared = _exchange(private, fields["public_key"])
        m3 = {"handshake_id": m2["handshake_id"],
              "evidence": self._attester(_handshake_report_data(_public_bytes(private), fields["nonce"]))}
        keys, confirm = _derive(shared, self._m1 + canonical_json(m2) + canonical_json(m3), verdict)
        self._expect_m4 = confirm.responder
        return {**m3, "confirm": confirm.initiator.hex()}, keys

    def confirm(self, m4: object) -> None:
        """Checks the responder's proof that it derived the same keys; use the channel only after."""
        expected, self._expect_m4 = self._expect_m4, None
        if expected is None:
            raise HandshakeError("state", "no finished handshake awaits confirmation")
        _check_confirmation(_parse(m4, M4_FIELDS)["confirm"], expected, "responder")


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
                 ttl_s: float = 10.0, max_pending: int = 4096, grace_s: float = 1.0, max_seen_nonces: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.my_role, self.peer_role = my_role, peer_role
        self._attester, self._appraise = attester, appraise
        self._ttl_s, self._max_pending, self._max_seen = ttl_s, max_pending, max_seen_nonces
        self._grace_s = grace_s
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
              "evidence": self._attester(_handshake_report_data(public, fields["nonce"]))}
        self._store(m2["handshake_id"], _Pending(canonical_json(m1), canonical_json(m2), fields["public_key"],
                                                  nonce, private, self._clock()))
        return m2

    def finish(self, m3: object) -> tuple[ChannelKeys, dict]:
        """Appraises the initiator's evidence over (its key, our nonce) and checks its key
        confirmation; -> (keys, m4) only if both pass, so no unconfirmed party gets a channel."""
        fields = _parse(m3, M3_FIELDS)
        pending = self._take(m3["handshake_id"])
        verdict = _appraised(self._appraise, fields["evidence"], self.peer_role,
                             _handshake_report_data(pending.peer_public, pending.nonce))
        shared = _exchange(pending.private, pending.peer_public)
        core = {"handshake_id": m3["handshake_id"], "evidence": m3["evidence"]}
        keys, confirm = _derive(shared, pending.m1 + pending.m2 + canonical_json(core), verdict)
        _check_confirmation(fields["confirm"], confirm.initiator, "initiator")
        return keys, {"confirm": confirm.responder.hex()}

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
            # Unauthenticated m1s can fill the table, and both simple answers to a full table are
            # attacks: refusing new hellos let ~26 hellos/s (256 entries / 10 s) keep node1 from ever
            # re-keying (after a node2 restart, say); evicting the oldest lets a flood push out node1's
            # handshake in progress. node1 sends m3 within one appraisal of m2 (well under grace_s), so
            # an entry older than grace_s is almost surely abandoned: evict those, oldest first, and
            # refuse only when every entry is younger. To keep node1 out an attacker must now create
            # max_pending entries every grace_s (4096/s), beyond nginx's per-client rate (1000/s) and
            # the evidence node2 can sign in a second.
            if len(self._pending) >= self._max_pending:
                oldest_id, oldest = next(iter(self._pending.items()))
                if self._clock() - oldest.created <= self._grace_s:
                    raise HandshakeError("busy", "too many handshakes in progress; retry shortly")
                del self._pending[oldest_id]
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
