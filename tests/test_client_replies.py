"""Where the client reads node1 (attestation/canonical.py's json_object): a server the client has not
verified (or a host in the middle) answering with something other than a JSON object gets a named
failure, never a traceback."""
import os

import pytest
import requests

from client.attest import VerificationFailed, fetch_evidence
from client.chat import Chat, ChatError
from client.sealed import SealedStreamError, open_stream
from shared.sealed_protocol import DONE, seal_events
from tests.impostors import AnswersWith, serving

NESTED = "[" * 60_000  # json.loads: RecursionError


def test_evidence_that_is_not_a_json_object_fails_the_reachable_check(monkeypatch):
    monkeypatch.setattr(AnswersWith, "body", NESTED.encode())
    with serving(AnswersWith) as url, requests.Session() as http:
        with pytest.raises(VerificationFailed, match="reachable failed: /attestation's answer is not a JSON object"):
            fetch_evidence(http, url, os.urandom(32))


def test_a_plain_stream_event_that_is_not_a_json_object_is_a_chat_error(monkeypatch):
    monkeypatch.setattr(AnswersWith, "body", f"data: {NESTED}\n\n".encode())
    monkeypatch.setattr(AnswersWith, "content_type", "text/event-stream; charset=utf-8")
    with serving(AnswersWith) as url, requests.Session() as http:
        chat = Chat(http, url, temperature=0.0, max_tokens=4)
        with pytest.raises(ChatError, match="not a JSON object"):
            chat.turn("hi", None, lambda piece: None)


def test_a_sealed_event_that_opens_to_something_else_is_a_sealed_stream_error():
    key = os.urandom(32)
    lines = [f"data: {e}" for e in seal_events(['{"text": "a"}', NESTED, DONE], key)]
    events = open_stream(lines, key)
    assert next(events) == {"text": "a"}
    with pytest.raises(SealedStreamError, match="sealed event 1 opened to something other than a JSON object"):
        next(events)
