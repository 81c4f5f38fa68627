"""The whole-node decode call (shared/q4/decode.cpp) on a small made-up model of Q4_1 blocks.

It must compute what the layer-by-layer ops compute (up to float32 rounding), and a row's bits must
not depend on the rows beside it, a replay, the thread count or the CPU path.
"""
import pytest
import torch

from shared import model as M
from shared.kv import SessionCache
from shared.linear import BlockWeight
from shared.q4 import kernel
from shared.spec import ModelSpec
from tests.conftest import CPU
from tests.test_q4_kernel import RUNNABLE, random_blocks

PATH = kernel.isa_for(CPU.flags)
SPEC = ModelSpec(model_type="llama", num_layers=3, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=96,
                 vocab=100, eps=1e-5, rope_theta=10000.0, max_positions=256, attention_bias=False,
                 tie_embeddings=True, sliding_window=None)


def blocks(m: int, k: int, seed: int, isa: str) -> BlockWeight:
    return BlockWeight(random_blocks(m, k, "q4_1", seed=seed), "q4_1", k, isa)


def small_part(isa: str = PATH, bias: bool = False) -> M.Part:
    s, g = SPEC, torch.Generator().manual_seed(7)
    qkv = (s.heads + 2 * s.kv_heads) * s.head_dim
    layers = [M.Layer(ln1=1 + 0.1 * torch.randn(s.hidden, generator=g), wqkv=blocks(qkv, s.hidden, 10 * i, isa),
                      bqkv=0.1 * torch.randn(qkv, generator=g) if bias else None,
                      wo=blocks(s.hidden, s.heads * s.head_dim, 10 * i + 1, isa),
                      ln2=1 + 0.1 * torch.randn(s.hidden, generator=g),
                      wgu=blocks(2 * s.intermediate, s.hidden, 10 * i + 2, isa),
                      wdown=blocks(s.hidden, s.intermediate, 10 * i + 3, isa)) for i in range(s.num_layers)]
    cos, sin = M.rope_tables(s, s.max_positions, torch.float32)
    return M.Part(s, 0, layers, None, None, None, cos, sin)


def prefilled(part: M.Part, length: int, seed: int, capacity: int = 64) -> SessionCache:
    """A cache holding `length` positions of a made-up prompt, written by the layer ops."""
    cache = SessionCache(part.spec, len(part.layers), capacity, torch.float32)
    x = torch.randn(length, part.spec.hidden, generator=torch.Generator().manual_seed(seed))
    M.run_layers(part, x, [M.Seq(cache, 0, length)])
    return cache


def token(seed: int, n: int = 1) -> torch.Tensor:
    return torch.randn(n, SPEC.hidden, generator=torch.Generator().manual_seed(1000 + seed))


def clone(cache: SessionCache) -> SessionCache:
    out = SessionCache(SPEC, cache.k.shape[0], cache.capacity, torch.float32)
    out.k.copy_(cache.k), out.v.copy_(cache.v)
    out.length = cache.length
    return out


@pytest.mark.parametrize("bias", [False, True], ids=["llama", "qwen2-bias"])
def test_equals_the_layer_ops_up_to_float32_rounding(bias):
    part = small_part(bias=bias)
    caches = [prefilled(part, n, seed=n) for n in (5, 9, 1)]
    copies = [clone(c) for c in caches]
    x = token(0, 3)
    fused = M.decode_blocks(part, x, [M.Seq(c, c.length, 1) for c in caches])
    ops = M.layer_ops(part, x, [M.Seq(c, c.length, 1) for c in copies])
    torch.testing.assert_close(fused, ops, rtol=1e-5, atol=1e-5)
    for a, b in zip(caches, copies):  # the keys and values it wrote, too
        torch.testing.assert_close(a.k, b.k, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.v, b.v, rtol=1e-5, atol=1e-5)


def decode_steps(part: M.Part, batch: list[SessionCache], steps: int) -> list[torch.Tensor]:
    """Row 0's output at each of `steps` decode steps, batched with the other caches."""
    out = []
    for i in range(steps):
        seqs = [M.Seq(c, c.length, 1) for c in batch]
        x = torch.cat([token(i), token(100 + i, len(batch) - 1)])  # [B, D]: row 0 the same in every batch
        out.append(M.run_layers(part, x, seqs)[0])
    return out


def test_a_row_is_the_same_bits_alone_or_batched_beside_any_other():
    part = small_part()
    alone = decode_steps(part, [prefilled(part, 6, seed=1)], 4)
    others = [prefilled(part, n, seed=n, capacity=40 + n) for n in (2, 17, 30)]
    batched = decode_steps(part, [prefilled(part, 6, seed=1)] + others, 4)
    assert all(torch.equal(a, b) for a, b in zip(alone, batched))


def test_a_decode_row_beside_a_prefill_is_the_same_bits():
    part = small_part()
    alone = M.run_layers(part, token(0), [M.Seq(prefilled(part, 6, seed=1), 6, 1)])
    newcomer = SessionCache(SPEC, SPEC.num_layers, 64, torch.float32)
    mixed = M.run_layers(part, torch.cat([token(5, 7), token(0), token(6, 3)]),
                         [M.Seq(newcomer, 0, 7), M.Seq(prefilled(part, 6, seed=1), 6, 1),
                          M.Seq(SessionCache(SPEC, SPEC.num_layers, 64, torch.float32), 0, 3)])
    assert torch.equal(mixed[7:8], alone)


def test_a_replay_of_several_steps_in_one_call_equals_the_steps():
    part = small_part()
    stepwise, replayed = prefilled(part, 4, seed=3), prefilled(part, 4, seed=3)
    outs = [M.run_layers(part, token(i), [M.Seq(stepwise, 4 + i, 1)]) for i in range(3)]
    together = M.run_layers(part, torch.cat([token(i) for i in range(3)]), M.segments(replayed, 4, [1, 1, 1]))
    assert torch.equal(torch.cat(outs), together)
    assert torch.equal(stepwise.k, replayed.k) and replayed.length == 7


@pytest.mark.parametrize("threads", [1, 2])
def test_every_path_and_thread_count_gives_the_same_bits(threads):
    results = []
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for isa in RUNNABLE:
            part = small_part(isa)
            caches = [prefilled(part, n, seed=n) for n in (3, 12)]
            results.append(M.decode_blocks(part, token(0, 2), [M.Seq(c, c.length, 1) for c in caches]))
    finally:
        torch.set_num_threads(old)
    assert len(results) >= 2 and all(torch.equal(results[0], r) for r in results[1:])


def test_a_long_context_attends_every_position():
    # Past any fixed scores buffer: 200 cached positions, the attention must read them all.
    part = small_part()
    cache = prefilled(part, 200, seed=4, capacity=256)
    copy = clone(cache)
    fused = M.decode_blocks(part, token(0), [M.Seq(cache, 200, 1)])
    torch.testing.assert_close(fused, M.layer_ops(part, token(0), [M.Seq(copy, 200, 1)]), rtol=1e-5, atol=1e-5)


def test_caches_of_the_wrong_shape_are_refused():
    part = small_part()
    wrong = SessionCache(SPEC, SPEC.num_layers, 64, torch.float32)
    wrong.k = wrong.k[:, :1].contiguous()  # one KV head, not two
    with pytest.raises(RuntimeError, match="caches must be contiguous"):
        M.decode_blocks(part, token(0), [M.Seq(wrong, 0, 1)])
    with pytest.raises(RuntimeError, match="outside the cache"):
        M.decode_blocks(part, token(0), [M.Seq(SessionCache(SPEC, SPEC.num_layers, 4, torch.float32), 4, 1)])
