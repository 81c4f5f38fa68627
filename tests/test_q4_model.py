"""The lean path on the GGUF's own blocks (TWINTEE_DTYPE=q4_1) against the float32 path on the real model.

Both multiply by the very same weight values (tests/test_q4_release.py), so they differ only in the
order the kernels sum: by float32 rounding. Tokens may then differ only where the float32 path's own
top two logits are within that rounding of each other.
"""
import pytest
import torch

from release.prepare import role_tensors
from release.source import DEFAULT_SOURCE, gguf_blocks
from shared import model as M
from shared.linear import BlockWeight
from shared.q4 import kernel
from shared.spec import ModelSpec
from shared.weights import ShardMismatch, build_part
from tests.conftest import CPU, ROOT, chat_ids
from tests.test_e2e_equivalence import PROMPTS
from tests.test_model import SPLIT, lean_greedy, lean_logits, lean_parts, new_caches

pytestmark = pytest.mark.slow
PATH = kernel.isa_for(CPU.flags)
MAX_NEW = 40


def q4_shards(hf) -> dict[str, dict]:
    spec = ModelSpec.from_config(hf.config.to_dict())
    blocks = gguf_blocks(DEFAULT_SOURCE, spec.heads, spec.kv_heads)
    return {role: role_tensors(hf.state_dict(), spec, SPLIT, role, blocks) for role in ("node1", "node2")}


@pytest.fixture(scope="module")
def parts(smollm) -> dict[str, dict[str, M.Part]]:
    hf = smollm[0]
    spec = ModelSpec.from_config(hf.config.to_dict())
    q4 = {role: build_part(role, spec, SPLIT, sd, torch.float32, 2048, isa=PATH) for role, sd in q4_shards(hf).items()}
    return {"q4_1": q4, "float32": lean_parts(hf, torch.float32)}


def test_the_weights_stay_blocks_at_a_fifth_of_float32(parts):
    q4, f32 = parts["q4_1"], parts["float32"]
    assert isinstance(q4["node2"].head, BlockWeight) and q4["node2"].head.isa == PATH
    assert isinstance(q4["node1"].embed, BlockWeight) and q4["node1"].layers[0].wqkv.kind == "q4_1"
    for role in ("node1", "node2"):
        ratio = q4[role].weight_bytes() / f32[role].weight_bytes()
        assert 0.15 < ratio < 0.25, (role, ratio)


def test_embedding_rows_are_the_float32_rows(parts):
    ids = torch.tensor([0, 1, 504, 49151, 504])
    assert torch.equal(M.embed(parts["q4_1"]["node1"], ids), M.embed(parts["float32"]["node1"], ids))


def test_split_hidden_state_within_the_float32_tolerance(smollm, parts):
    hf, tok, _ = smollm
    ids = chat_ids(tok, [{"role": "user", "content": "Name three rivers in Europe."}])
    with torch.inference_mode():
        ref = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[SPLIT][0]
    (c1, _) = new_caches(parts["q4_1"], len(ids))
    p1 = parts["q4_1"]["node1"]
    h = M.run_layers(p1, M.embed(p1, torch.tensor(ids)), [M.Seq(c1, 0, len(ids))])
    torch.testing.assert_close(h, ref, rtol=1e-5, atol=1e-3)  # tests/test_model.py's float32 tolerance


def test_a_sequence_computes_the_same_bits_alone_or_in_a_batch(smollm, parts):
    tok = smollm[1]
    questions = ("Hi!", "Count to five.", "Why is the sky blue?", "Name a prime.", "Say yes.")
    prompts = [chat_ids(tok, [{"role": "user", "content": q}]) for q in questions]
    together = lean_logits(parts["q4_1"], prompts, 6)  # step 0 mixes five prefills of different lengths
    for p, batched in zip(prompts, together):
        alone = lean_logits(parts["q4_1"], [p], 6)[0]
        assert all(torch.equal(a, b) for a, b in zip(alone, batched))


def rounding_tie(f32: torch.Tensor, q4: torch.Tensor) -> bool:
    """Whether the two paths' top-1 differ only because float32's top two are within the rounding
    that separates the paths (the largest difference between their logits at that position)."""
    noise = (f32 - q4).abs().max()
    return bool(f32.max() - f32[q4.argmax()] <= 2 * noise)


@pytest.mark.parametrize("messages", PROMPTS, ids=["capital", "system", "haiku", "long"])
def test_greedy_tokens_equal_the_float32_path_up_to_rounding_ties(smollm, parts, messages):
    ids = chat_ids(smollm[1], messages)
    q4, f32 = lean_greedy(parts["q4_1"], ids, MAX_NEW), lean_greedy(parts["float32"], ids, MAX_NEW)
    first = next((i for i, (a, b) in enumerate(zip(q4, f32)) if a != b), None)
    if first is not None:  # the same prefix up to here: compare both paths' logits on it
        prefix = [ids + f32[:first]]
        a, b = lean_logits(parts["float32"], prefix, 1)[0][0], lean_logits(parts["q4_1"], prefix, 1)[0][0]
        assert rounding_tie(a, b), (first, q4[first], f32[first])
        print(f"tie at token {first}: float32 {f32[first]}, q4_1 {q4[first]}")


def forced_logits(parts, ids: list[int]) -> torch.Tensor:
    """Teacher forcing: one prefill of `ids` -> [T, V] logits of every position."""
    c1, c2 = new_caches(parts, len(ids))
    p1, p2 = parts["node1"], parts["node2"]
    h = M.run_layers(p1, M.embed(p1, torch.tensor(ids)), [M.Seq(c1, 0, len(ids))])
    return M.logits(p2, M.run_layers(p2, h, [M.Seq(c2, 0, len(ids))]))


def test_teacher_forced_top1_agrees_with_float32_but_for_rounding_ties(smollm, parts):
    # The README's own prose, in windows of 512 tokens: a few thousand positions of real text.
    ids = smollm[1](( ROOT / "README.md").read_text())["input_ids"]
    windows = [ids[i : i + 512] for i in range(0, min(len(ids), 6 * 512), 512)]
    agree = ties = total = 0
    for w in windows:
        f32, q4 = forced_logits(parts["float32"], w), forced_logits(parts["q4_1"], w)
        same = f32.argmax(-1) == q4.argmax(-1)
        agree, total = agree + int(same.sum()), total + len(w)
        for i in torch.nonzero(~same).flatten().tolist():
            assert rounding_tie(f32[i], q4[i]), i
            ties += 1
    print(f"teacher-forced top-1 agreement: {agree}/{total} = {agree / total:.4%}, {ties} rounding ties")
    assert total >= 2500 and agree + ties == total


def test_a_node_refuses_a_shard_of_the_other_format(smollm):
    hf = smollm[0]
    spec = ModelSpec.from_config(hf.config.to_dict())
    sd = q4_shards(hf)["node2"]
    with pytest.raises(ShardMismatch, match="TWINTEE_DTYPE=q4_1"):
        build_part("node2", spec, SPLIT, dict(sd), torch.float32, 64)
