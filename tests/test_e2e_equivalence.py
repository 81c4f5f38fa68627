"""The central test: node1 and node2 as real processes give exactly transformers' own greedy tokens."""
import pytest
import requests

from tests.conftest import chat_ids, hf_greedy
from tests.e2e import start_stack

pytestmark = pytest.mark.slow

LONG_TEXT = " ".join(
    f"Section {i}: the river delta supports farming, fishing and trade, and its towns grew along the "
    f"banks where boats could land goods from upstream markets before the seasonal floods arrived."
    for i in range(14)
)
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "List three primary colors."}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": f"Summarize this report in two sentences.\n\n{LONG_TEXT}"}],
]
MAX_NEW = 40


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"))
    yield s
    s.stop()


@pytest.mark.parametrize("messages", PROMPTS, ids=["capital", "system", "haiku", "long"])
def test_split_generation_equals_unsplit_generate(stack, smollm, messages):
    model, tok, _ = smollm
    ids = chat_ids(tok, messages)
    ref = hf_greedy(model, ids, MAX_NEW)
    r = requests.post(stack.url("node1") + "/generate", headers=stack.auth,
                      json={"messages": messages, "max_tokens": MAX_NEW, "temperature": 0}, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    eos = tok.eos_token_id
    expected = ref[:-1] if ref and ref[-1] == eos else ref
    assert out["token_ids"] == expected
    assert out["finish_reason"] == ("stop" if ref[-1] == eos else "length")
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(expected)}
    assert out["text"] == tok.decode(expected, skip_special_tokens=True)


def test_long_prompt_is_over_400_tokens(smollm):
    assert len(chat_ids(smollm[1], PROMPTS[-1])) > 400


def test_concurrent_streams_each_equal_their_single_stream_output(stack, smollm):
    """Continuous batching must not change any stream's tokens."""
    from concurrent.futures import ThreadPoolExecutor

    model, tok, _ = smollm
    msgs = PROMPTS[:3]
    refs = []
    for m in msgs:
        ref = hf_greedy(model, chat_ids(tok, m), 24)
        refs.append(ref[:-1] if ref[-1] == tok.eos_token_id else ref)

    def call(m):
        return requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={"messages": m, "max_tokens": 24}, timeout=300).json()

    with ThreadPoolExecutor(len(msgs)) as pool:
        outs = list(pool.map(call, msgs))
    assert [o["token_ids"] for o in outs] == refs
