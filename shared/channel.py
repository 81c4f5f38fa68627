"""Sealing and opening frames on one attested channel: AES-256-GCM, counter nonces, strict order.

Each direction has its own key and its own sequence counter. The nonce is a 4-byte direction
constant followed by the 8-byte sequence number, so it is never reused under a key. The whole
canonical header (channel, direction, sequence and the caller's routing/KV metadata) is the
associated data, so none of it can be changed without the tag failing.
"""
import threading
import time
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared import wire
from shared.handshake import ChannelKeys
from attestation.canonical import canonical_json

# Distinct per direction: even if both directions ever shared a key, their nonces could not collide.
DIRECTION_PREFIX = {"i2r": b"\x00\x00\x00\x01", "r2i": b"\x00\x00\x00\x02"}
SEQ_LIMIT = 2**64  # the nonce's 8-byte counter field
RENEW_MARGIN_S = 30.0  # renew this long before the age limit (at most a tenth of it)
RESERVED_FIELDS = ("ch", "dir", "seq")
REASONS = ("malformed", "channel", "direction", "replay", "reorder", "tag")


class FrameRejected(Exception):
    """A frame from the peer was refused; `reason` is one of REASONS (never the frame's content)."""

    def __init__(self, reason: str):
        super().__init__(f"frame rejected: {reason}")
        self.reason = reason


class ChannelExpired(Exception):
    """The channel reached its frame or age limit; re-handshake for fresh keys."""


def frame_nonce(direction: str, seq: int) -> bytes:
    return DIRECTION_PREFIX[direction] + seq.to_bytes(8, "big")


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEQ_LIMIT


class SealedChannel:
    """One side of a channel: seals what it sends, opens what the peer sent, in order, once each."""

    def __init__(self, keys: ChannelKeys, side: str, *, max_frames: int = 1_000_000,
                 max_age_s: float = 3600, clock: Callable[[], float] = time.monotonic):
        if side not in ("initiator", "responder"):
            raise ValueError("side must be 'initiator' or 'responder'")
        if not 0 < max_frames <= SEQ_LIMIT:
            raise ValueError("max_frames must be positive and fit the 8-byte nonce counter")
        initiator = side == "initiator"
        self._send_dir, self._recv_dir = ("i2r", "r2i") if initiator else ("r2i", "i2r")
        self._send = AESGCM(keys.i2r_key if initiator else keys.r2i_key)
        self._recv = AESGCM(keys.r2i_key if initiator else keys.i2r_key)
        self._channel = keys.channel_id.hex()
        self._max_frames, self._max_age_s, self._clock = max_frames, max_age_s, clock
        self._born = clock()
        self._sent = 0  # next seq to seal
        self._received = 0  # next seq expected from the peer
        self._lock = threading.RLock()

    @property
    def channel_id(self) -> str:
        return self._channel

    @property
    def expired(self) -> bool:
        """True once either direction used max_frames nonces or max_age_s passed: time to re-handshake."""
        with self._lock:
            return (self._sent >= self._max_frames or self._received >= self._max_frames
                    or self._clock() - self._born >= self._max_age_s)

    @property
    def renew_due(self) -> bool:
        """True when the initiator should re-handshake before its next frame: one more exchange
        (its frame and the peer's reply) must fit both sides' frame limit, and the peer's clock,
        which started a round trip earlier, must still be inside the age limit (issue 13: with a
        25-frame limit every stream died at token 23, when node2 could not seal its reply)."""
        margin_s = min(RENEW_MARGIN_S, self._max_age_s / 10)
        with self._lock:
            return (self._sent >= self._max_frames - 1 or self._received >= self._max_frames - 1
                    or self._clock() - self._born >= self._max_age_s - margin_s)

    def seal(self, header: dict, plaintext: bytes) -> bytes:
        """-> a frame whose header is `header` plus ch/dir/seq, all of it bound as associated data."""
        if any(name in header for name in RESERVED_FIELDS):
            raise ValueError(f"header fields {RESERVED_FIELDS} are set by the channel")
        with self._lock:  # held across encryption so seq order is the order frames come out
            if self.expired:
                raise ChannelExpired("channel is past its frame or age limit")
            seq = self._sent
            head = canonical_json({**header, "ch": self._channel, "dir": self._send_dir, "seq": seq})
            body = self._send.encrypt(frame_nonce(self._send_dir, seq), plaintext, head)
            self._sent += 1
        return wire.encode_raw_frame(head, body)

    def open(self, frame: bytes) -> tuple[dict, bytes]:
        """-> (header as sent, including ch/dir/seq; plaintext), or raises FrameRejected."""
        try:
            decoded = wire.decode_frame(frame)
        except wire.WireError:
            self._refuse("malformed")
        return self.open_decoded(decoded)

    def open_decoded(self, frame: wire.Frame) -> tuple[dict, bytes]:
        """open() for a frame the receiver already decoded to route it (node2 finds the channel by
        its header): the same checks, without parsing the header a second time. `frame` must be
        wire.decode_frame's: the checks read its header, the tag covers its raw header bytes."""
        header = frame.header
        seq = header.get("seq")
        if not _is_seq(seq):
            self._refuse("malformed")
        if header.get("ch") != self._channel:
            self._refuse("channel")
        if header.get("dir") != self._recv_dir:
            self._refuse("direction")
        with self._lock:  # held across decryption so two openers cannot both accept one seq
            if seq < self._received:
                self._refuse("replay")
            if seq > self._received:
                self._refuse("reorder")
            try:
                plaintext = self._recv.decrypt(frame_nonce(self._recv_dir, seq), frame.body, frame.raw_header)
            except InvalidTag:
                self._refuse("tag")
            self._received += 1  # only a frame that verified moves the window
        return header, plaintext

    def _refuse(self, reason: str):
        # node2 counts refusals per reason in Prometheus (twintee_frames_rejected_total), the one tally.
        raise FrameRejected(reason)
