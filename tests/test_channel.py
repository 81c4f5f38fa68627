"""Tests for sealing and opening frames: every tampering, replay and reorder is refused."""
import os

import pytest

from attestation.canonical import canonical_json
from shared import channel as channel_module
from shared import wire
from shared.channel import ChannelExpired, FrameRejected, SealedChannel
from shared.handshake import ChannelKeys
from tests.conftest import run_concurrently

SESSION = "0123456789abcdef0123456789abcdef"
OTHER_SESSION = "fedcba9876543210fedcba9876543210"
BODY = bytes(range(256)) + b"hidden-state" * 20  # a few hundred bytes


def random_keys() -> ChannelKeys:
    return ChannelKeys(channel_id=os.urandom(16), i2r_key=os.urandom(32), r2i_key=os.urandom(32),
                       peer_verdict={"ok": True}, created_at=0.0)


def step_header(session: str = SESSION) -> dict:
    return {"type": "step", "sessions": [{"id": session, "step": 3, "pos": 17, "n": 1}],
            "close": [], "dtype": "bfloat16", "shape": [1, 64]}


@pytest.fixture
def keys():
    return random_keys()


@pytest.fixture
def node1(keys):
    return SealedChannel(keys, "initiator")


@pytest.fixture
def node2(keys):
    return SealedChannel(keys, "responder")


def reseal_header(frame: bytes, **changes) -> bytes:
    """The same ciphertext under a header edited by someone without the key."""
    header, _, body = wire.decode_frame(frame)
    return wire.encode_frame({**header, **changes}, body)


def refused(chan: SealedChannel, frame: bytes) -> str:
    with pytest.raises(FrameRejected) as err:
        chan.open(frame)
    return err.value.reason


# --- Round trips -----------------------------------------------------------------------------


def test_round_trip_both_directions(node1, node2):
    header, plaintext = node2.open(node1.seal(step_header(), BODY))
    assert plaintext == BODY and header["sessions"][0]["id"] == SESSION
    assert (header["dir"], header["seq"]) == ("i2r", 0)
    assert node1.open(node2.seal({"type": "tokens"}, b"ids"))[1] == b"ids"


def test_a_frame_decoded_once_to_route_it_opens_with_the_same_checks(node1, node2):
    """node2 reads the channel id from the header, then opens the same decoded frame."""
    frame = wire.decode_frame(node1.seal(step_header(), BODY))
    assert node2.open_decoded(frame) == (frame.header, BODY)
    with pytest.raises(FrameRejected) as err:
        node2.open_decoded(frame)
    assert err.value.reason == "replay"
    tampered = wire.decode_frame(node1.seal(step_header(), BODY))
    with pytest.raises(FrameRejected) as err:
        node2.open_decoded(tampered._replace(body=tampered.body[:-1] + bytes([tampered.body[-1] ^ 1])))
    assert err.value.reason == "tag"


def test_seal_does_not_change_the_callers_header(node1):
    header = step_header()
    node1.seal(header, BODY)
    assert header == step_header()


def test_header_fields_owned_by_the_channel_cannot_be_set(node1):
    with pytest.raises(ValueError):
        node1.seal({"seq": 7}, BODY)


# --- Tampering -------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_every_flipped_byte_is_rejected(node1, node2, flip):
    frame = node1.seal(step_header(), BODY)
    assert len(frame) > 300
    reasons = [refused(node2, frame[:i] + bytes([frame[i] ^ flip]) + frame[i + 1 :]) for i in range(len(frame))]
    assert node2.open(frame)[1] == BODY  # the untouched frame still opens: refusals were for tampering
    assert len(reasons) == len(frame) and set(reasons) <= {"malformed", "channel", "direction", "replay", "reorder", "tag"}


def test_truncated_frames_are_rejected(node1, node2):
    frame = node1.seal(step_header(), BODY)
    head_len = 8 + len(canonical_json(wire.decode_frame(frame)[0]))
    for length in (0, 3, 7, 8, 20, head_len - 1, head_len, head_len + 15, len(frame) - 16, len(frame) - 1):
        assert refused(node2, frame[:length]) in ("malformed", "tag")
    assert node2.open(frame)[1] == BODY


def test_changed_session_id_is_rejected(node1, node2):
    frame = node1.seal(step_header(), BODY)
    header = wire.decode_frame(frame)[0]
    sessions = [{**header["sessions"][0], "id": OTHER_SESSION}]
    assert refused(node2, reseal_header(frame, sessions=sessions)) == "tag"


@pytest.mark.parametrize("change", [{"dtype": "float32"}, {"shape": [2, 32]}, {"type": "tokens"}])
def test_changed_metadata_is_rejected(node1, node2, change):
    assert refused(node2, reseal_header(node1.seal(step_header(), BODY), **change)) == "tag"


def test_frame_from_another_channel_is_rejected(node2):
    stranger = SealedChannel(random_keys(), "initiator")
    frame = stranger.seal(step_header(), BODY)
    assert refused(node2, frame) == "channel"
    # Claiming our channel id does not help: the key is different.
    assert refused(node2, reseal_header(frame, ch=node2.channel_id)) == "tag"


def test_own_frame_reflected_back_is_rejected(node1):
    assert refused(node1, node1.seal(step_header(), BODY)) == "direction"


def test_relabelled_direction_is_rejected(node1, node2):
    frame = node2.seal({"type": "tokens"}, b"ids")
    assert refused(node2, reseal_header(frame, dir="i2r")) == "tag"


# --- Order -----------------------------------------------------------------------------------


def test_replay_is_rejected(node1, node2):
    frame = node1.seal(step_header(), BODY)
    node2.open(frame)
    assert refused(node2, frame) == "replay"


def test_reorder_is_rejected_and_does_not_advance(node1, node2):
    first, second = node1.seal(step_header(), b"0"), node1.seal(step_header(), b"1")
    assert refused(node2, second) == "reorder"
    assert node2.open(first)[1] == b"0" and node2.open(second)[1] == b"1"


def test_forged_frame_does_not_advance_the_counter(node1, node2):
    frame = node1.seal(step_header(), BODY)
    assert refused(node2, frame[:-1] + bytes([frame[-1] ^ 1])) == "tag"
    assert node2.open(frame)[1] == BODY


def test_each_refusal_names_its_reason(node1, node2):
    frame = node1.seal(step_header(), BODY)
    reasons = [refused(node2, b"junk"), refused(node2, frame[:-1] + bytes([frame[-1] ^ 1])),
               refused(node2, frame[:-1] + bytes([frame[-1] ^ 2]))]
    node2.open(frame)
    assert reasons + [refused(node2, frame)] == ["malformed", "tag", "tag", "replay"]


def test_concurrent_opens_accept_each_frame_once(node1, node2):
    frame = node1.seal(step_header(), BODY)
    accepted, reasons = [], []

    def try_open():
        try:
            accepted.append(node2.open(frame))
        except FrameRejected as exc:
            reasons.append(exc.reason)

    run_concurrently(try_open)
    assert len(accepted) == 1 and reasons == ["replay"] * 7


# --- Limits and nonces -----------------------------------------------------------------------


def test_expires_after_max_frames(keys):
    sender = SealedChannel(keys, "initiator", max_frames=3)
    receiver = SealedChannel(keys, "responder", max_frames=3)
    for _ in range(3):
        assert not sender.expired
        receiver.open(sender.seal({}, b"x"))
    assert sender.expired and receiver.expired
    with pytest.raises(ChannelExpired):
        sender.seal({}, b"x")


def test_expires_after_max_age(keys):
    now = [100.0]
    chan = SealedChannel(keys, "initiator", max_age_s=60, clock=lambda: now[0])
    chan.seal({}, b"x")
    now[0] += 59.9
    assert not chan.expired
    now[0] += 0.1
    assert chan.expired
    with pytest.raises(ChannelExpired):
        chan.seal({}, b"x")


def test_nonces_are_unique(monkeypatch, keys):
    nonces = []

    real_aesgcm = channel_module.AESGCM

    class SpyAESGCM:  # records every nonce the channel really passes to AES-GCM
        def __init__(self, key):
            self._aead = real_aesgcm(key)

        def encrypt(self, nonce, data, associated_data):
            nonces.append(nonce)
            return self._aead.encrypt(nonce, data, associated_data)

    monkeypatch.setattr(channel_module, "AESGCM", SpyAESGCM)
    node1, node2 = SealedChannel(keys, "initiator"), SealedChannel(keys, "responder")
    for _ in range(1000):
        node1.seal(step_header(), b"x")
        node2.seal({"type": "tokens"}, b"y")
    assert len(nonces) == 2000 and len(set(nonces)) == 2000
    assert all(len(n) == 12 for n in nonces)


def test_the_initiator_renews_while_one_more_exchange_still_fits_both_limits(keys):
    # Issue 13: with a 25-frame limit node2 could not seal its reply to frame 25 and the stream died.
    a, b = SealedChannel(keys, "initiator", max_frames=3), SealedChannel(keys, "responder", max_frames=3)
    exchanges = 0
    while not a.renew_due:
        b.open(a.seal({"type": "step"}, b""))
        a.open(b.seal({"type": "tokens"}, b""))  # the reply always fits
        exchanges += 1
    assert exchanges == 2 and not a.expired and not b.expired


def test_renewal_comes_a_margin_before_the_age_limit(keys):
    now = [0.0]
    chan = SealedChannel(keys, "initiator", max_age_s=100, clock=lambda: now[0])
    now[0] = 89.0
    assert not chan.renew_due
    now[0] = 90.5  # a tenth of the age limit before it, while the peer's clock is still inside it
    assert chan.renew_due and not chan.expired
