"""The OpenAI-compatible API against the real processes, with the official `openai` package as the client:
models, chat (plain and streamed), completions, stop strings across tokens, seeded n, logprobs, errors."""
import openai
import pytest
import requests

from tests.e2e import start_stack

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"), TWINTEE_MAX_NEW_TOKENS="64")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack.url("node1") + "/v1", api_key=stack.api_key, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


@pytest.fixture(scope="module")
def greedy(client, model):
    """One greedy chat reply with its tokens' logprobs (the top 5 each)."""
    return client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0,
                                          logprobs=True, top_logprobs=5)


def generate(stack, **body) -> dict:
    r = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={"messages": MESSAGES, **body}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_models_lists_the_release(client, model):
    models = client.models.list().data
    assert [m.id for m in models] == ["HuggingFaceTB/SmolLM2-135M-Instruct"] == [model]
    assert models[0].object == "model"


def test_greedy_chat_equals_generate_token_for_token(stack, greedy, release_dir):
    from transformers import AutoTokenizer

    ref = generate(stack, max_tokens=24)
    choice = greedy.choices[0]
    assert choice.message.content == ref["text"] and choice.finish_reason == ref["finish_reason"]
    assert greedy.usage.completion_tokens == len(ref["token_ids"]) and greedy.usage.prompt_tokens == ref["usage"]["prompt_tokens"]
    tok = AutoTokenizer.from_pretrained(release_dir / "model" / "tokenizer")
    assert [e.token for e in choice.logprobs.content] == [tok.decode([i]) for i in ref["token_ids"]]


def test_streamed_chat_equals_plain_and_ends_with_usage(client, model, greedy):
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(c.choices[0].finish_reason is not None for c in chunks[:-1]) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == greedy.usage.total_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == greedy.choices[0].message.content


def test_text_completion_plain_and_streamed(client, model):
    plain = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert plain.object == "text_completion" and plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 8 and plain.choices[0].text.strip()
    streamed = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text


def test_a_stop_string_across_two_tokens_is_never_shown(client, model, greedy):
    tokens = [e.token for e in greedy.choices[0].logprobs.content]
    text = greedy.choices[0].message.content
    k = next(k for k in range(2, len(tokens) - 1) if tokens[k].strip() and tokens[k + 1].strip())
    stop = tokens[k][-2:] + tokens[k + 1][:2]  # ends one token, starts the next
    expected = text[: text.index(stop)]
    plain = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0, stop=[stop])
    assert plain.choices[0].message.content == expected and plain.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0, stop=stop,
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected  # not even its first character


def test_n_seeded_choices_are_reproducible(stack, client, model):
    ask = dict(model=model, messages=[{"role": "user", "content": "Tell me a short story about a cat."}],
               max_tokens=16, temperature=0.9, top_p=0.95, seed=11)
    a, b = (client.chat.completions.create(n=3, **ask) for _ in range(2))
    texts = [c.message.content for c in a.choices]
    assert [c.index for c in a.choices] == [0, 1, 2] and texts == [c.message.content for c in b.choices]
    assert len(set(texts)) > 1  # each choice draws with its own seed derived from 11
    ref = requests.post(stack.url("node1") + "/generate", headers=stack.auth, timeout=300,
                        json={"messages": ask["messages"], "max_tokens": 16, "temperature": 0.9, "top_p": 0.95,
                              "seed": 11}).json()
    assert texts[0] == ref["text"]  # choice 0 keeps the seed: /generate's draw


def test_greedy_logprobs_rank_the_chosen_token_first(greedy):
    content = greedy.choices[0].logprobs.content
    assert len(content) == greedy.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 5 and entry.logprob <= 0
        assert entry.logprob == max(t.logprob for t in entry.top_logprobs) == entry.top_logprobs[0].logprob
        assert entry.token == entry.top_logprobs[0].token


@pytest.mark.parametrize("fields, param", [
    ({"max_tokens": 65}, "max_tokens"),
    ({"temperature": 2.5}, "temperature"),
    ({"n": 5}, "n"),
    ({"top_logprobs": 9, "logprobs": True}, "top_logprobs"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
])
def test_invalid_requests_are_400_naming_the_param(client, model, fields, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**{"model": model, "messages": MESSAGES, **fields})
    assert err.value.status_code == 400 and err.value.type == "invalid_request_error" and err.value.param == param
    assert isinstance(err.value.code, str) and err.value.body["message"]


def test_unknown_model_is_404_naming_model(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert err.value.param == "model" and err.value.code == "model_not_found"


def test_non_json_and_too_long_prompts(stack, client, model):
    r = requests.post(stack.url("node1") + "/v1/completions", data="x", headers={**stack.auth, "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=model, prompt="word " * 3000, max_tokens=4)
    assert err.value.code == "context_length_exceeded" and err.value.param == "prompt"


# --- The verifying encrypted transport for the official client, through a host in the middle -----------

SECRET = "the launch code is 5512-alpha"


def sealed_client(url: str, release_dir, api_key: str):
    import httpx

    from client.openai_transport import VerifyingTransport

    transport = VerifyingTransport(url, release_dir)
    return openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=300,
                         http_client=httpx.Client(transport=transport)), transport


def test_the_encrypted_transport_shows_the_host_only_ciphertext(stack, release_dir, model):
    from tests.proxy import HostProxy

    ask = dict(model=model, messages=[{"role": "user", "content": SECRET}], max_tokens=12, temperature=0)
    direct = openai.OpenAI(base_url=stack.url("node1") + "/v1", api_key=stack.api_key, timeout=300)
    expected = direct.chat.completions.create(**ask).choices[0].message.content
    with HostProxy(stack.url("node1")) as host:
        client, transport = sealed_client(host.url, release_dir, stack.api_key)
        plain = client.chat.completions.create(**ask).choices[0].message.content
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask, stream=True))
        captured = host.capture()
        paths = host.paths()
    assert plain == streamed == expected and len(expected) > 10
    assert transport.reports["node1"].ok and transport.reports["node2"].ok
    assert set(paths) == {"attestation", "v1/sealed/openai"} and paths.count("attestation") == 1
    for text in (SECRET, expected, "chat.completion"):  # (the model id is public: the evidence names it)
        assert text.encode() not in captured


def test_the_encrypted_transport_refuses_to_send_when_evidence_is_tampered(stack, release_dir, model):
    import json

    from client.openai_transport import NotVerified
    from tests.proxy import HostProxy

    def swap_node1_key(path: str, body: bytes) -> bytes:
        if path != "attestation":
            return body
        doc = json.loads(body)
        doc["node1"]["public_key"] = "11" * 32  # the host offers its own key, so prompts would be sealed to it
        return json.dumps(doc).encode()

    with HostProxy(stack.url("node1")) as host:
        host.rewrite = swap_node1_key
        client, _ = sealed_client(host.url, release_dir, stack.api_key)
        with pytest.raises(openai.APIConnectionError) as err:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": SECRET}])
        assert host.paths() == ["attestation"]  # nothing else went out
    assert isinstance(err.value.__cause__, NotVerified) and "report_data" in str(err.value.__cause__)


# --- The API description against the running node1 (schemathesis) ------------------------------------

CAPPED = 4  # generated bodies ask for at most this many tokens: the run is about shapes, not lengths


EXAMPLES = 15  # per operation and mode: 11 operations x 2 modes take about 30 s on 2 busy cores


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_matches_its_description(stack, mode):
    """schemathesis against the running node1: no 5xx, every status documented, every body of the
    documented media type and shape. Valid requests (positive) and invalid ones (negative)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(stack.url("node1") + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    served = requests.get(stack.url("node1") + "/openapi.json", timeout=30).json()["paths"]
    described = {f"{m.upper()} {p}" for p, ops in served.items() for m in ops}
    assert {op.label for op in operations} == described - {"GET /openapi.json"}  # schemathesis skips its source

    for operation in operations:
        @given(case=operation.as_strategy(GenerationMode(mode)))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def check(case):
            if isinstance(case.body, dict):
                for name in ("max_tokens", "max_completion_tokens"):
                    if isinstance(case.body.get(name), int) and case.body[name] > CAPPED:
                        case.body[name] = CAPPED
            case.call_and_validate(checks=checks, timeout=300, headers=stack.auth)

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid: no body and no parameters (GET /health, ...)
            assert mode == "negative"
