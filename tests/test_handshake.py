"""Tests for the attested handshake, with a small Ed25519 fake standing in for real attestation."""
import json
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.binding import PEER_HANDSHAKE, PURPOSES, report_data
from attestation.errors import AttestationError
from shared.channel import SealedChannel
from shared.handshake import HandshakeError, Initiator, Responder

GOOD = "a" * 64  # the measurement the appraiser trusts
MAX_AGE_S = 60


class FakePlatform:
    """Signs (role, measurement, report_data, issued_at) with Ed25519, like a tiny quoting enclave."""

    def __init__(self, key: Ed25519PrivateKey):
        self.key = key

    def attester(self, role: str, measurement: str = GOOD, issued_at: float | None = None):
        calls = []

        def attest(report_data: bytes) -> dict:
            calls.append(report_data)
            claims = {"role": role, "measurement": measurement, "report_data": report_data.hex(),
                      "issued_at": time.time() if issued_at is None else issued_at}
            signature = self.key.sign(json.dumps(claims, sort_keys=True).encode())
            return {**claims, "signature": signature.hex()}

        attest.calls = calls
        return attest


def make_appraiser(trusted: Ed25519PrivateKey):
    public = trusted.public_key()

    def appraise(evidence: dict, expected_role: str, expected_report_data: bytes) -> dict:
        claims = {k: evidence.get(k) for k in ("role", "measurement", "report_data", "issued_at")}
        try:
            public.verify(bytes.fromhex(evidence["signature"]), json.dumps(claims, sort_keys=True).encode())
        except (InvalidSignature, KeyError, ValueError) as exc:
            raise AttestationError("signature", "evidence signature does not verify") from exc
        if claims["role"] != expected_role:
            raise AttestationError("role", "evidence is for another role")
        if claims["measurement"] != GOOD:
            raise AttestationError("measurement", "unexpected measurement")
        if claims["report_data"] != expected_report_data.hex():
            raise AttestationError("report_data", "evidence does not bind this key and nonce")
        if time.time() - claims["issued_at"] > MAX_AGE_S:
            raise AttestationError("freshness", "evidence is stale")
        return {"ok": True, "role": claims["role"], "measurement": claims["measurement"]}

    return appraise


@pytest.fixture
def platform():
    return FakePlatform(Ed25519PrivateKey.generate())


@pytest.fixture
def appraise(platform):
    return make_appraiser(platform.key)  # trusts exactly this platform's key


def make_pair(platform, appraise, *, node1_attester=None, node2_attester=None, **responder_kw):
    initiator = Initiator("node1", "node2", node1_attester or platform.attester("node1"), appraise)
    responder = Responder("node2", "node1", node2_attester or platform.attester("node2"), appraise,
                          **responder_kw)
    return initiator, responder


def run(initiator, responder):
    m2 = responder.respond(initiator.hello())
    m3, keys_i = initiator.finish(m2)
    keys_r, m4 = responder.finish(m3)
    initiator.confirm(m4)
    return keys_i, keys_r


# --- Success ---------------------------------------------------------------------------------


def test_both_sides_derive_identical_keys(platform, appraise):
    keys_i, keys_r = run(*make_pair(platform, appraise))
    assert keys_i.channel_id == keys_r.channel_id and len(keys_i.channel_id) == 16
    assert keys_i.i2r_key == keys_r.i2r_key and keys_i.r2i_key == keys_r.r2i_key
    assert keys_i.i2r_key != keys_i.r2i_key and len(keys_i.i2r_key) == 32
    assert keys_i.peer_verdict["role"] == "node2" and keys_r.peer_verdict["role"] == "node1"


def test_keys_are_fresh_per_handshake_and_kept_out_of_repr(platform, appraise):
    first, _ = run(*make_pair(platform, appraise))
    second, _ = run(*make_pair(platform, appraise))
    assert first.channel_id != second.channel_id and first.i2r_key != second.i2r_key
    assert first.i2r_key.hex() not in repr(first) and first.r2i_key.hex() not in repr(first)


def test_derived_keys_interoperate_in_both_directions(platform, appraise):
    keys_i, keys_r = run(*make_pair(platform, appraise))
    node1, node2 = SealedChannel(keys_i, "initiator"), SealedChannel(keys_r, "responder")
    assert node2.open(node1.seal({"type": "step"}, b"hidden"))[1] == b"hidden"
    assert node1.open(node2.seal({"type": "tokens"}, b"ids"))[1] == b"ids"


def test_keys_bind_the_whole_transcript(monkeypatch, platform, appraise):
    # With the DH keys and nonces pinned, only the evidence's timestamp differs between runs:
    # the keys must follow it, because the HKDF salt hashes the whole transcript.
    from shared import handshake

    class PinnedKeys:
        generate = staticmethod(lambda: X25519PrivateKey.from_private_bytes(bytes([7]) * 32))

    class PinnedRandom:
        token_bytes = staticmethod(lambda n: bytes([9]) * n)
        token_hex = staticmethod(lambda n: "09" * n)

    monkeypatch.setattr(handshake, "X25519PrivateKey", PinnedKeys)
    monkeypatch.setattr(handshake, "secrets", PinnedRandom)
    now = time.time()

    def keys_with_evidence_time(issued_at):
        return run(*make_pair(platform, appraise, node1_attester=platform.attester("node1", issued_at=now),
                              node2_attester=platform.attester("node2", issued_at=issued_at)))[0]

    same, again, other = (keys_with_evidence_time(t) for t in (now, now, now + 1))
    assert same.i2r_key == again.i2r_key and same.channel_id == again.channel_id
    assert other.i2r_key != same.i2r_key and other.channel_id != same.channel_id


# --- Evidence refused: at the initiator (bad m2) and at the responder (bad m3) ---------------


def bad_attesters(platform, role):
    stranger = FakePlatform(Ed25519PrivateKey.generate())
    return {
        "signature": stranger.attester(role),  # forged: signed by a key the appraiser does not trust
        "role": platform.attester("node3" if role == "node2" else "node2"),
        "measurement": platform.attester(role, measurement="b" * 64),
        "freshness": platform.attester(role, issued_at=time.time() - 10 * MAX_AGE_S),
    }


@pytest.mark.parametrize("failure", ["signature", "role", "measurement", "freshness"])
def test_initiator_refuses_bad_responder_evidence(platform, appraise, failure):
    node1_attester = platform.attester("node1")
    initiator, responder = make_pair(platform, appraise, node1_attester=node1_attester,
                                     node2_attester=bad_attesters(platform, "node2")[failure])
    m2 = responder.respond(initiator.hello())
    with pytest.raises(HandshakeError) as err:
        initiator.finish(m2)
    assert err.value.check == failure and isinstance(err.value, AttestationError)
    assert node1_attester.calls == []  # node1 never attested itself to an unverified peer
    with pytest.raises(HandshakeError):
        initiator.finish(m2)  # and the attempt cannot be retried into keys


@pytest.mark.parametrize("failure", ["signature", "role", "measurement", "freshness"])
def test_responder_refuses_bad_initiator_evidence(platform, appraise, failure):
    initiator, responder = make_pair(platform, appraise,
                                     node1_attester=bad_attesters(platform, "node1")[failure])
    m3, _ = initiator.finish(responder.respond(initiator.hello()))
    with pytest.raises(HandshakeError) as err:
        responder.finish(m3)
    assert err.value.check == failure
    assert responder.pending_count == 0  # the failed handshake is gone, nothing to derive from


def test_initiator_refuses_a_peer_claiming_the_wrong_role(platform, appraise):
    initiator, responder = make_pair(platform, appraise)
    m2 = responder.respond(initiator.hello())
    with pytest.raises(HandshakeError) as err:
        initiator.finish({**m2, "role": "node3"})
    assert err.value.check == "role"


def test_responder_refuses_an_m1_from_the_wrong_role(platform, appraise):
    initiator = Initiator("node3", "node2", platform.attester("node3"), appraise)
    _, responder = make_pair(platform, appraise)
    with pytest.raises(HandshakeError) as err:
        responder.respond(initiator.hello())
    assert err.value.check == "role" and responder.pending_count == 0


# --- Replays, unknown ids, expiry ------------------------------------------------------------


def test_responder_refuses_a_reused_m1_nonce(platform, appraise):
    initiator, responder = make_pair(platform, appraise)
    m1 = initiator.hello()
    responder.respond(m1)
    with pytest.raises(HandshakeError) as err:
        responder.respond(m1)
    assert err.value.check == "replay" and responder.pending_count == 1


def test_responder_refuses_a_replayed_m3(platform, appraise):
    initiator, responder = make_pair(platform, appraise)
    m3, _ = initiator.finish(responder.respond(initiator.hello()))
    responder.finish(m3)
    with pytest.raises(HandshakeError) as err:
        responder.finish(m3)
    assert err.value.check == "unknown_handshake"


def test_responder_refuses_an_unknown_handshake_id(platform, appraise):
    initiator, responder = make_pair(platform, appraise)
    m3, _ = initiator.finish(responder.respond(initiator.hello()))
    with pytest.raises(HandshakeError) as err:
        responder.finish({**m3, "handshake_id": "0" * 32})
    assert err.value.check == "unknown_handshake"
    assert responder.pending_count == 1  # a wrong guess does not consume the real handshake


def test_responder_refuses_an_expired_handshake(platform, appraise):
    now = [1000.0]
    initiator, responder = make_pair(platform, appraise, ttl_s=30, clock=lambda: now[0])
    m3, _ = initiator.finish(responder.respond(initiator.hello()))
    now[0] += 31
    with pytest.raises(HandshakeError) as err:
        responder.finish(m3)
    assert err.value.check == "expired"


def test_a_flood_of_hellos_is_bounded_and_never_pushes_out_a_handshake_in_progress(platform, appraise):
    now = [0.0]
    initiator, responder = make_pair(platform, appraise, max_pending=4, clock=lambda: now[0])
    m2 = responder.respond(initiator.hello())  # node1's, first
    now[0] = 0.5  # node1 is still appraising m2, well within the grace
    for _ in range(3):
        responder.respond(Initiator("node1", "node2", platform.attester("node1"), appraise).hello())
    with pytest.raises(HandshakeError, match="busy"):  # full of young entries: refuse, do not evict
        responder.respond(Initiator("node1", "node2", platform.attester("node1"), appraise).hello())
    assert responder.pending_count == 4
    m3, _ = initiator.finish(m2)
    assert responder.finish(m3)[0].channel_id  # node1's handshake still completes


def test_a_slow_flood_cannot_keep_node1_from_re_keying(platform, appraise):
    # The flood's entries, older than the grace, give way to new hellos: a table kept full at a
    # trickle no longer refuses node1 until they expire.
    now = [0.0]
    initiator, responder = make_pair(platform, appraise, max_pending=4, clock=lambda: now[0])
    for i in range(4):
        now[0] = i * 0.1
        responder.respond(Initiator("node1", "node2", platform.attester("node1"), appraise).hello())
    now[0] = 2.0  # past the 1 s grace, far inside the 10 s time to live
    m3, _ = initiator.finish(responder.respond(initiator.hello()))
    assert responder.finish(m3)[0].channel_id
    assert responder.pending_count == 3  # one abandoned entry, the oldest, made room


def test_pending_handshakes_expire(platform, appraise):
    now = [0.0]
    initiator, responder = make_pair(platform, appraise, max_pending=1, clock=lambda: now[0])
    responder.respond(Initiator("node1", "node2", platform.attester("node1"), appraise).hello())
    now[0] = 11.0  # past the 10 s time to live: the flood's entry is gone
    m3, _ = initiator.finish(responder.respond(initiator.hello()))
    assert responder.finish(m3)[0].channel_id


def test_relayed_evidence_without_the_private_key_cannot_finish(platform, appraise):
    # Issue 12's relay, done right for the handshake purpose: an outsider sends node1's public key
    # in m1 and obtains node1-made evidence over it and node2's nonce. Appraisal passes; the key
    # confirmation, which needs the private key behind that public key, does not.
    victim = Initiator("node1", "node2", platform.attester("node1"), appraise)
    hello = victim.hello()
    _, responder = make_pair(platform, appraise)
    m2 = responder.respond({**hello, "nonce": "ab" * 32})
    relayed = platform.attester("node1")(
        report_data(bytes.fromhex(hello["public_key"]), bytes.fromhex(m2["nonce"]), purpose=PEER_HANDSHAKE))
    with pytest.raises(HandshakeError, match="key_confirmation"):
        responder.finish({"handshake_id": m2["handshake_id"], "evidence": relayed, "confirm": "00" * 32})


@pytest.mark.parametrize("purpose", [p for p in PURPOSES if p != PEER_HANDSHAKE])
def test_evidence_made_for_another_purpose_cannot_complete_a_handshake(platform, appraise, purpose):
    """node2's real check: evidence over the handshake's own key and nonce, but made for a client's
    challenge, a key request, response signing or the ledger, does not finish it."""
    initiator, responder = make_pair(platform, appraise)
    hello = initiator.hello()
    m2 = responder.respond(hello)
    m3, _ = initiator.finish(m2)
    other_evidence = platform.attester("node1")(
        report_data(bytes.fromhex(hello["public_key"]), bytes.fromhex(m2["nonce"]), purpose=purpose))
    with pytest.raises(HandshakeError, match="report_data"):
        responder.finish({**m3, "evidence": other_evidence})


def test_the_initiator_uses_no_channel_until_the_responder_confirms(platform, appraise):
    initiator, responder = make_pair(platform, appraise)
    m3, _ = initiator.finish(responder.respond(initiator.hello()))
    responder.finish(m3)
    with pytest.raises(HandshakeError, match="key_confirmation"):
        initiator.confirm({"confirm": "11" * 32})


# --- Tampering in transit --------------------------------------------------------------------


def attacker_public_hex() -> str:
    public = X25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def test_initiator_refuses_a_swapped_m2_public_key(platform, appraise):
    initiator, responder = make_pair(platform, appraise)
    m2 = responder.respond(initiator.hello())
    with pytest.raises(HandshakeError) as err:
        initiator.finish({**m2, "public_key": attacker_public_hex()})
    assert err.value.check == "report_data"


def test_responder_refuses_a_swapped_m1_public_key(platform, appraise):
    initiator, responder = make_pair(platform, appraise)
    m2 = responder.respond({**initiator.hello(), "public_key": attacker_public_hex()})
    m3, _ = initiator.finish(m2)
    with pytest.raises(HandshakeError) as err:
        responder.finish(m3)
    assert err.value.check == "report_data"


def test_changed_m2_nonce_is_refused_by_the_responder(platform, appraise):
    # The responder's nonce is not in its own evidence, but changing it makes node1 attest to a
    # nonce the responder never chose, so the responder refuses m3.
    initiator, responder = make_pair(platform, appraise)
    m2 = responder.respond(initiator.hello())
    m3, _ = initiator.finish({**m2, "nonce": "0" * 64})
    with pytest.raises(HandshakeError) as err:
        responder.finish(m3)
    assert err.value.check == "report_data"


def test_low_order_public_key_is_refused(platform, appraise):
    # Even with evidence that binds it, an all-zero key would give an all-zero shared secret.
    initiator, responder = make_pair(platform, appraise)
    m2 = responder.respond({**initiator.hello(), "public_key": "0" * 64})
    evidence = platform.attester("node1")(report_data(bytes(32), bytes.fromhex(m2["nonce"]), purpose=PEER_HANDSHAKE))
    with pytest.raises(HandshakeError) as err:
        responder.finish({"handshake_id": m2["handshake_id"], "evidence": evidence, "confirm": "00" * 32})
    assert err.value.check == "key_exchange"


# --- Malformed messages ----------------------------------------------------------------------


MALFORMED_M1 = {
    "not a dict": lambda m1: ["m1"],
    "missing field": lambda m1: {k: v for k, v in m1.items() if k != "nonce"},
    "extra field": lambda m1: {**m1, "extra": 1},
    "short nonce": lambda m1: {**m1, "nonce": m1["nonce"][:-2]},
    "uppercase hex": lambda m1: {**m1, "nonce": m1["nonce"].upper()},
    "non-hex key": lambda m1: {**m1, "public_key": "z" * 64},
    "numeric role": lambda m1: {**m1, "role": 1},
    "other version": lambda m1: {**m1, "version": "twintee-handshake/0"},
}


@pytest.mark.parametrize("variant", list(MALFORMED_M1))
def test_responder_refuses_malformed_m1(platform, appraise, variant):
    initiator, responder = make_pair(platform, appraise)
    with pytest.raises(HandshakeError) as err:
        responder.respond(MALFORMED_M1[variant](initiator.hello()))
    assert err.value.check in ("malformed", "version") and responder.pending_count == 0


@pytest.mark.parametrize("change", [{"evidence": "x"}, {"handshake_id": "1"}, {"nonce": None}])
def test_malformed_m2_and_m3_are_refused(platform, appraise, change):
    initiator, responder = make_pair(platform, appraise)
    m2 = responder.respond(initiator.hello())
    with pytest.raises(HandshakeError) as err:
        initiator.finish({**m2, **change})
    assert err.value.check == "malformed"
    m3 = {"handshake_id": m2["handshake_id"], "evidence": []}
    with pytest.raises(HandshakeError) as err:
        responder.finish({**m3, **{k: v for k, v in change.items() if k in m3}})
    assert err.value.check == "malformed"
