"""shared/shard_access.py: a node's key fetch waits out a broker outage and stops at a refusal."""
import pytest

from attestation.key_request import KeyReleaseError
from shared import shard_access


class FakeRelease:
    model_id, manifest = "m", {"version": 1}


def test_a_node_waits_for_an_unreachable_broker_and_heals_when_it_answers(monkeypatch, tmp_path):
    # Issue 13: after the broker was frozen for 40 s, node2 stayed failed until killed by hand.
    answers = [KeyReleaseError("broker unreachable"), KeyReleaseError("broker refused (503)", 503), ("kid", b"k" * 32)]
    calls, waits, slept = [], [], []

    def fake_fetch(*args, **kwargs):
        calls.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(shard_access, "fetch_shard_key", fake_fetch)
    monkeypatch.setattr(shard_access, "decrypt_to_memory", lambda path, key, **kw: key)

    opener = shard_access.broker_opener("http://b", "node2", FakeRelease(), None, on_wait=waits.append, sleep=slept.append)
    assert opener({"plaintext_sha256": "00"}, tmp_path) == b"k" * 32
    assert len(calls) == 3 and slept == [0.5, 1.0] and all("waiting for key broker" in w for w in waits)


def test_a_refusal_by_the_broker_is_final(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise KeyReleaseError("broker refused (403): measurement", 403)

    monkeypatch.setattr(shard_access, "fetch_shard_key", refuse)

    opener = shard_access.broker_opener("http://b", "node2", FakeRelease(), None, sleep=lambda s: None)
    with pytest.raises(KeyReleaseError, match="403"):
        opener({"plaintext_sha256": "00"}, tmp_path)
