"""attestation/key_request.py against whatever answers on the broker's address: an impostor's answer
is refused with a KeyReleaseError the loader retries on (shared/shard_access.py), never an exception
out of it and never more than MAX_ANSWER_BYTES in memory. The real broker's answers: tests/test_broker.py."""
import pytest

from attestation.key_request import MAX_ANSWER_BYTES, KeyReleaseError, fetch_shard_key
from tests.impostors import AnswersWith, Floods, serving


def fetch(url: str):
    return fetch_shard_key(url, role="node1", model_id="m", version=1, attester=lambda rd: {}, timeout=5)


@pytest.mark.parametrize("body", [b"[" * 60_000, b"[1]", b"not json"], ids=["nested", "not-an-object", "not-json"])
def test_an_answer_that_is_not_a_json_object_is_a_key_release_error(body, monkeypatch):
    monkeypatch.setattr(AnswersWith, "body", body)
    with serving(AnswersWith) as url:  # nested: a RecursionError out of requests' .json() before
        with pytest.raises(KeyReleaseError, match="something other than a JSON object"):
            fetch(url)


def test_an_answer_past_the_limit_is_refused_after_reading_at_most_the_limit():
    with serving(Floods) as url:  # claims 10 GB; requests' .json() read all of it into memory before
        with pytest.raises(KeyReleaseError, match=f"over {MAX_ANSWER_BYTES} bytes"):
            fetch(url)


def test_nobody_on_the_brokers_address_is_unreachable():
    with pytest.raises(KeyReleaseError, match="broker unreachable"):
        fetch("http://127.0.0.1:9")
