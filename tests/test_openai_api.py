"""node1/openai_api.py over a fake pipeline: response and chunk shapes, the stop-string hold-back in
both modes, n choices, logprobs placement and OpenAI-shaped errors. The real processes: test_e2e_openai.py."""
import json
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node1.app import create_app
from node1.config import Node1Config
from node1.scheduler import REPLY_CHUNK_TOKENS, Finished, GenerationFailed
from shared.metrics import NodeMetrics
from shared.wire import SampledToken
from tests.conftest import tenant_gate
from tests.test_sealed import FakeCodec as SealedFakeCodec

MODEL = "org/tiny"
REPLY = "Hello, world. Bye"


class FakeCodec(SealedFakeCodec):
    """One character per token id (its code point), plain text prompts too (/v1/completions)."""

    def tok(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


class FakeRuntime:
    """Replies REPLY (shifted by the seed, so choices differ) with logprobs when asked; `fail_at` makes
    every generation fail after that many tokens."""

    def __init__(self):
        self.config = Node1Config(max_body_bytes=4096)
        self.metrics, self.codec = NodeMetrics("node1"), FakeCodec()
        self.release = SimpleNamespace(model_id=MODEL, manifest={"created_at": 1700000000})
        self.identity = SimpleNamespace(key=X25519PrivateKey.generate())  # what /v1/sealed/openai opens with
        self.fail_at, self.seen = None, []

    def health(self, probe: bool = True):
        return {"status": "ok"}, 200

    def refresh_gauges(self) -> None:
        pass

    def submit(self, gen):
        self.seen.append(gen)
        shift = (gen.sampling["seed"] or 0) % 7 if gen.sampling["temperature"] else 0
        k = gen.sampling.get("logprobs")
        for pos, c in enumerate(REPLY[: gen.max_tokens]):
            if self.fail_at is not None and pos == self.fail_at:
                gen.out.put(GenerationFailed("node2 refused the step: boom"))
                return
            tok = ord(c) + (shift if c.isalpha() else 0)
            gen.out.put([tok if k is None else SampledToken(tok, -0.5, [(tok, -0.5), (33, -2.0)][: k])])
        gen.out.put(Finished("stop" if gen.max_tokens >= len(REPLY) else "length"))


@pytest.fixture()
def rt():
    return FakeRuntime()


@pytest.fixture()
def http(rt, tmp_path):
    gate, key = tenant_gate(tmp_path, rt)
    client = create_app(rt.config, runtime=rt, gate=gate).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"  # every request as tenant `t`
    return client


def chat(http, **fields):
    return http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                   "temperature": 0, **fields})


def events(r) -> list:
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    lines = [line for line in r.get_data(as_text=True).split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_models_lists_the_release_model(http):
    assert http.get("/v1/models").get_json() == {"object": "list", "data": [
        {"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "twintee"}]}


def test_chat_completion_shape(http):
    body = chat(http).get_json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": REPLY, "refusal": None},
                                "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": len(REPLY), "total_tokens": 2 + len(REPLY)}


def test_chat_stream_shape_and_usage(http):
    chunks = events(chat(http, stream=True, stream_options={"include_usage": True}))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({(c["id"], c["created"]) for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]].count("stop") == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(REPLY)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == REPLY


@pytest.mark.parametrize("fields, chunk", [
    ({}, REPLY_CHUNK_TOKENS),  # read whole: woken once per chunk of tokens, not per token
    ({"stream": True}, 1),  # each token as it comes
    ({"stop": ["zz"]}, 1),  # stop strings are matched token by token, so the run ends at once
])
def test_only_a_reply_read_whole_without_stop_strings_takes_its_tokens_in_chunks(http, rt, fields, chunk):
    assert chat(http, **fields).status_code == 200 and rt.seen[-1].chunk == chunk


def test_without_include_usage_no_usage_key(http):
    chunks = events(chat(http, stream=True))
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stop", [", w", ["xyz", "d. B"], "Bye"])
def test_a_stop_string_is_never_shown_in_either_mode(http, stop):
    plain = chat(http, stop=stop).get_json()["choices"][0]
    first = stop if isinstance(stop, str) else stop[1]
    assert plain["message"]["content"] == REPLY[: REPLY.index(first)] and plain["finish_reason"] == "stop"
    chunks = events(chat(http, stream=True, stop=stop))
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert "".join(pieces) == plain["message"]["content"]  # append-only: not even the stop's first character


def test_n_choices_are_seeded_and_reproducible(http, rt):
    body = chat(http, n=3, temperature=0.8, seed=5).get_json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert len(set(texts)) > 1 and chat(http, n=3, temperature=0.8, seed=5).get_json()["choices"] == body["choices"]
    assert rt.seen[0].sampling["seed"] == 5  # choice 0 keeps the seed: n=1 equals /generate
    assert body["usage"]["prompt_tokens"] == 2 and body["usage"]["completion_tokens"] == 3 * len(REPLY)


def test_n_choices_stream_each_with_role_and_one_finish(http):
    chunks = events(chat(http, n=2, stream=True))
    for i in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert mine[0]["delta"]["role"] == "assistant" and sum(m["finish_reason"] is not None for m in mine) == 1
        assert "".join(m["delta"].get("content", "") for m in mine) == REPLY


def test_chat_logprobs_plain_equals_stream(http):
    plain = chat(http, logprobs=True, top_logprobs=2).get_json()["choices"][0]["logprobs"]["content"]
    assert len(plain) == len(REPLY) and plain[0] == {
        "token": "H", "bytes": [72], "logprob": -0.5,
        "top_logprobs": [{"token": "H", "bytes": [72], "logprob": -0.5}, {"token": "!", "bytes": [33], "logprob": -2.0}]}
    chunks = events(chat(http, logprobs=True, top_logprobs=2, stream=True, stop="xyz"))
    streamed = [e for c in chunks for e in ((c["choices"][0]["logprobs"] or {}).get("content") or [])]
    assert streamed == plain
    assert chat(http).get_json()["choices"][0]["logprobs"] is None


def test_only_sequences_that_ask_get_logprobs_computed(http, rt):
    chat(http)
    chat(http, logprobs=True)
    assert [g.sampling["logprobs"] for g in rt.seen] == [None, 0]


def test_text_completion_with_legacy_logprobs(http):
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": "Say", "temperature": 0, "max_tokens": 5,
                                           "logprobs": 1})
    body = r.get_json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    c = body["choices"][0]
    assert c["text"] == "Hello" and c["finish_reason"] == "length"
    assert c["logprobs"] == {"tokens": list("Hello"), "token_logprobs": [-0.5] * 5,
                             "top_logprobs": [{ch: -0.5} for ch in "Hello"], "text_offset": [0, 1, 2, 3, 4]}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    chunks = events(http.post("/v1/completions", json={"model": MODEL, "prompt": "Say", "max_tokens": 5,
                                                       "stream": True, "temperature": 0}))
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello"


def error_of(r, status):
    assert r.status_code == status, r.get_data(as_text=True)
    err = r.get_json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["code"], str)
    return err


@pytest.mark.parametrize("fields, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 5, "max_completion_tokens": 5000}, "max_completion_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": "x"}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"n": 5}, "n"),
    ({"stop": ["a"] * 9}, "stop"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 6}, "top_logprobs"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"model": None}, "model"),
    ({"messages": [{"role": "user", "content": "x" * 3000}]}, "messages"),
])
def test_invalid_requests_name_the_param(http, fields, param):
    err = error_of(chat(http, **fields), 400)
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_unknown_model_is_a_404_naming_model(http):
    err = error_of(chat(http, model="gpt-4o"), 404)
    assert err["param"] == "model" and err["code"] == "model_not_found"


def test_body_errors_keep_the_openai_shape_and_old_routes_keep_theirs(http):
    assert error_of(http.post("/v1/chat/completions", data="x", content_type="text/plain"), 415)["param"] is None
    error_of(http.post("/v1/completions", data="{no", content_type="application/json"), 400)
    error_of(http.post("/v1/completions", json={"model": MODEL, "prompt": "x" * 5000}), 413)
    assert http.post("/generate", json={"prompt": ""}).get_json() == {
        "error": "give either 'prompt' (a non-empty string) or 'messages'"}


def test_a_failure_before_streaming_is_a_502_not_a_200(http, rt):
    rt.fail_at = 0
    assert error_of(chat(http, stream=True), 502)["type"] == "server_error"
    assert error_of(chat(http), 502)["message"] == "node2 refused the step: boom"


def test_a_failure_mid_stream_is_an_error_event_before_done(http, rt):
    rt.fail_at = 3
    chunks = events(chat(http, stream=True))
    assert chunks[-1]["error"]["message"] == "node2 refused the step: boom" and "choices" not in chunks[-1]
    assert all(g.cancelled.is_set() for g in rt.seen)


def test_a_client_leaving_mid_stream_cancels_every_choice(http, rt):
    r = http.post("/v1/chat/completions", buffered=False, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 2, "stream": True})
    first = next(r.response)
    assert first.startswith(b"data: ") and not any(g.cancelled.is_set() for g in rt.seen)
    r.close()
    assert len(rt.seen) == 2 and all(g.cancelled.is_set() for g in rt.seen)
