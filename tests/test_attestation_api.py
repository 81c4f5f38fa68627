"""node1/attestation_api.py: node2's evidence relayed to whoever asks node1's public /attestation (and
/v1/attestation/report), read as strictly as node1's other reads of node2: whatever answers on node2's
address is not trusted before the challenger checks it."""
import time

import pytest

from node1 import attestation_api
from node1.attestation_api import node2_evidence
from tests.impostors import AnswersWith, Trickles, serving

NONCE = bytes(range(32))


def test_node2s_json_object_is_relayed_as_is(monkeypatch):
    monkeypatch.setattr(AnswersWith, "body", b'{"role": "node2", "evidence": {"quote": "00"}}')
    with serving(AnswersWith) as url:
        assert node2_evidence(url, NONCE) == {"role": "node2", "evidence": {"quote": "00"}}


@pytest.mark.parametrize("body", [b"[" * 60_000, b"[1]", b"not json"], ids=["nested", "not-an-object", "not-json"])
def test_an_answer_that_is_not_a_json_object_is_named_not_raised(body, monkeypatch):
    monkeypatch.setattr(AnswersWith, "body", body)
    with serving(AnswersWith) as url:  # nested: a RecursionError out of requests' .json() before (a 500)
        assert node2_evidence(url, NONCE) == {"error": "node2 answered 200: not a JSON object"}


def test_a_trickled_answer_ends_at_the_relays_timeout(monkeypatch):
    monkeypatch.setattr(attestation_api, "NODE2_TIMEOUT_S", 1.0)
    with serving(Trickles) as url:
        t0 = time.monotonic()
        assert node2_evidence(url, NONCE) == {"error": "node2 unreachable"}
        assert time.monotonic() - t0 < 3  # requests waited for all 6 s of it: its timeout is per read


def test_nobody_on_node2s_address_is_unreachable():
    assert node2_evidence("http://127.0.0.1:9", NONCE) == {"error": "node2 unreachable"}
