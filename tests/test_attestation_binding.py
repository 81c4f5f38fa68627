"""attestation/binding.py: evidence made for one purpose never verifies for another; in particular node1's
response-signing evidence is neither handshake nor key-request evidence, and neither of those is it."""
import pytest

from attestation.binding import (
    CLIENT_ATTESTATION,
    KEY_REQUEST,
    PEER_HANDSHAKE,
    PURPOSES,
    RESPONSE_SIGNING,
    report_data,
)
from tests.test_attestation_verify import Release, verifier
from tests.test_broker import ask, assert_refused, client, clock, config  # noqa: F401 - fixtures

KEY, NONCE = b"k" * 32, b"n" * 32


def test_every_purpose_binds_differently():
    assert RESPONSE_SIGNING in PURPOSES
    assert len({report_data(KEY, NONCE, purpose=p) for p in PURPOSES}) == len(PURPOSES)
    with pytest.raises(ValueError):
        report_data(KEY, NONCE, purpose="response-signing ")


@pytest.mark.parametrize("made_for, checked_as", [
    (RESPONSE_SIGNING, PEER_HANDSHAKE), (RESPONSE_SIGNING, KEY_REQUEST), (RESPONSE_SIGNING, CLIENT_ATTESTATION),
    (PEER_HANDSHAKE, RESPONSE_SIGNING), (KEY_REQUEST, RESPONSE_SIGNING), (CLIENT_ATTESTATION, RESPONSE_SIGNING)])
def test_evidence_for_one_purpose_fails_as_another(tmp_path, made_for, checked_as):
    release = Release(tmp_path)
    ev = release.evidence("node1", report_data(KEY, NONCE, purpose=made_for))
    check = verifier(release.policy)
    assert check.check(ev, "node1", report_data(KEY, NONCE, purpose=made_for))["ok"]
    verdict = check.check(ev, "node1", report_data(KEY, NONCE, purpose=checked_as))
    assert not verdict["ok"] and verdict["failed"] == "report_data"



def test_signing_evidence_gets_no_shard_key(client, config):
    """The broker's real check (broker/key_release.py): node1's signing-key evidence over the broker's
    own nonce is refused, and audited as refused."""
    resp, _ = ask(client, purpose=RESPONSE_SIGNING)
    assert_refused(config, resp, 403, "report_data")


