"""bfloat16 weights through the real processes against transformers' own generate() in bfloat16.

bf16 keeps 8 bits of mantissa, so two logits often tie exactly (23.625 == 23.625 is seen on these
prompts) and which of the tied tokens wins is decided by rounding. The split must then equal the
reference token for token up to the first such tie, and pick one of the tied tokens there.
"""
import copy

import pytest
import requests
import torch

from tests.conftest import chat_ids, needs_bf16_kernels
from tests.e2e import start_stack
from tests.test_e2e_equivalence import PROMPTS

pytestmark = [pytest.mark.slow, needs_bf16_kernels]
MAX_NEW = 32


@pytest.fixture(scope="module")
def bf16_stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"), TWINTEE_DTYPE="bfloat16")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def bf16_model(smollm):
    return copy.deepcopy(smollm[0]).to(torch.bfloat16)


def reference(model, ids):
    """-> (greedy tokens, per step the set of tokens tied with the top logit within one bf16 ulp)."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(ids):].tolist()
    ties = []
    for scores in out.scores:
        s = scores[0].float()
        top = s.max()
        ulp = 2.0 ** (torch.floor(torch.log2(top.abs())) - 7)  # bf16 spacing at that magnitude
        ties.append(set(torch.nonzero(s >= top - ulp).flatten().tolist()))
    return tokens, ties


@pytest.mark.parametrize("messages", PROMPTS, ids=["capital", "system", "haiku", "long"])
def test_bf16_split_follows_bf16_generate_up_to_exact_ties(bf16_stack, bf16_model, smollm, messages):
    tok = smollm[1]
    ids = chat_ids(tok, messages)
    ref, ties = reference(bf16_model, ids)
    out = requests.post(bf16_stack.url("node1") + "/generate", headers=bf16_stack.auth, json={"messages": messages, "max_tokens": MAX_NEW},
                        timeout=300).json()["token_ids"]
    expected = ref[:-1] if ref[-1] == tok.eos_token_id else ref
    first_diff = next((i for i, (a, b) in enumerate(zip(out, expected)) if a != b), None)
    if first_diff is None:
        assert out == expected
    else:
        assert len(ties[first_diff]) > 1 and out[first_diff] in ties[first_diff], (first_diff, ties[first_diff])


def test_bf16_weights_take_half_the_memory(bf16_stack):
    health = requests.get(bf16_stack.url("node2") + "/health", timeout=10).json()
    assert health["memory"]["weight_bytes"] < 200e6  # float32: 326 MB
