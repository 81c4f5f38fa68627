"""TWINTEE_DTYPE=q4_1 through the real processes: a release of the GGUF's own blocks, sealed frames,
attested handshake, and the tokens of transformers' own float32 generate()."""
import pytest
import requests
import torch

from release.publish import publish
from release.source import DEFAULT_SOURCE
from tests.conftest import chat_ids
from tests.e2e import own_ports, start_stack
from tests.test_e2e_equivalence import PROMPTS

pytestmark = pytest.mark.slow
MAX_NEW = 40
FLOAT32_NODE2_WEIGHT_BYTES = 326e6  # node2's float32 weights (/health memory.weight_bytes)


@pytest.fixture(scope="module")
def q4_release(tmp_path_factory, smollm):
    data = tmp_path_factory.mktemp("release-q4")
    publish(DEFAULT_SOURCE, data, loaded=smollm, weights="q4_1")
    return data


@pytest.fixture(scope="module")
def q4_stack(q4_release, tmp_path_factory):
    s = start_stack(q4_release, tmp_path_factory.mktemp("q4-logs"), TWINTEE_DTYPE="q4_1", **own_ports(50))
    yield s
    s.stop()


def reference(model, ids):
    """-> (greedy tokens, per step the tokens within float32 rounding of the top logit)."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    ties = []
    for scores in out.scores:
        s = scores[0]
        ties.append(set(torch.nonzero(s >= s.max() - 1e-4 * s.max().abs()).flatten().tolist()))
    return out.sequences[0, len(ids):].tolist(), ties


@pytest.mark.parametrize("messages", PROMPTS, ids=["capital", "system", "haiku", "long"])
def test_q4_split_gives_the_reference_tokens(q4_stack, smollm, messages):
    model, tok, _ = smollm
    ids = chat_ids(tok, messages)
    ref, ties = reference(model, ids)
    r = requests.post(q4_stack.url("node1") + "/generate", headers=q4_stack.auth,
                      json={"messages": messages, "max_tokens": MAX_NEW, "temperature": 0}, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()["token_ids"]
    expected = ref[:-1] if ref[-1] == tok.eos_token_id else ref
    first = next((i for i, (a, b) in enumerate(zip(out, expected)) if a != b), None)
    if first is None:
        assert out == expected
    else:  # only where float32's own top two are within rounding of each other
        assert len(ties[first]) > 1 and out[first] in ties[first], (first, ties[first])


def test_q4_nodes_hold_a_fifth_of_the_weight_bytes_and_name_the_kernel(q4_stack):
    for role in ("node1", "node2"):
        health = requests.get(q4_stack.url(role) + "/health", timeout=10).json()
        assert health["compute"]["kernel"].startswith("q4-"), health["compute"]
        assert health["compute"]["openmp_wait"] == "PASSIVE", health["compute"]  # shared/cpu.py: OPENMP_ENV
        assert health["compute"]["openmp_spins"] == "4000", health["compute"]
    assert health["memory"]["weight_bytes"] < FLOAT32_NODE2_WEIGHT_BYTES / 4, health["memory"]
