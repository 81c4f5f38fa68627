"""The q4 kernel: float32 rows times GGUF blocks, correct, batch-invariant, and the same bits on every path."""
import os

import pytest
import torch

from shared.q4 import kernel
from shared.q4.blocks import BLOCK_BYTES, dequantize
from tests.conftest import CPU

SHAPES = [(960, 576, "q4_1"), (576, 576, "q4_1"), (3072, 576, "q4_1"), (576, 1536, "q4_1"), (49152, 576, "q8_0")]
PATH = kernel.isa_for(CPU.flags)  # the path a node on this CPU takes (TWINTEE_CPU_ISA's cap included)
RUNNABLE = [isa for isa in ("avx512", "avx2", "baseline") if kernel.ISA_NEEDS[isa] <= CPU.flags]
# The two summation orders: a token's decode rows (lanes.h) and a prompt's rows (panel.h).
ORDERS = {"token": kernel.mm, "prompt": kernel.prompt_mm}


def random_blocks(m: int, k: int, kind: str, seed: int = 0, order_revealing: bool = False) -> torch.Tensor:
    """uint8 [m, k / 32 * bytes] of plausible scales (and minimums), random codes. `order_revealing`
    makes every row's first and last weight equal and large, so rows x with x[0] = -x[-1] huge sum to
    a value that shows in which order the small products between were added."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, 256, (m, k // 32, BLOCK_BYTES[kind]), dtype=torch.uint8, generator=g)
    b[..., 0:2] = (torch.rand(m, k // 32, 1, generator=g) * 0.02 + 1e-3).half().view(torch.uint8)
    if kind == "q4_1":
        b[..., 2:4] = (-torch.rand(m, k // 32, 1, generator=g) * 0.1).half().view(torch.uint8)
    if order_revealing:
        b[:, -1, :4] = b[:, 0, :4] = torch.tensor([0x00, 0x58, 0x00, 0x00] if kind == "q4_1" else [0x00, 0x58, 0x7F, 0])
        if kind == "q4_1":  # w = 128 * 15 at k = 0 (low nibble of byte 0) and k = K - 1 (high nibble of byte 15)
            b[:, 0, 4] |= 0x0F
            b[:, -1, 19] |= 0xF0
        else:  # w = 128 * 127 at k = 0 and k = K - 1
            b[:, -1, 33] = 0x7F
    return b.reshape(m, -1).contiguous()


def rows(n: int, k: int, seed: int = 1, order_revealing: bool = False) -> torch.Tensor:
    x = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    if order_revealing:
        x[:, 0], x[:, -1] = 2.0**10, -(2.0**10)
    return x


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
@pytest.mark.parametrize("isa", RUNNABLE)
def test_equals_a_float64_matmul_of_the_dequantized_weights(kind, isa, order):
    w, x = random_blocks(200, 576, kind), rows(9, 576)
    ref = x.double() @ dequantize(w, kind).double().T  # [9, 200]
    out = ORDERS[order](x, w, kind, isa)
    assert out.shape == (9, 200) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("m,k,kind", SHAPES, ids=["qkv", "o", "gate_up", "down", "head"])
def test_a_row_is_the_same_alone_or_in_any_batch(m, k, kind, order):
    # What keeps a stream's tokens identical alone or batched, on the path this CPU takes.
    mm = ORDERS[order]
    w, x = random_blocks(m, k, kind, order_revealing=True), rows(100, k, order_revealing=True)
    alone = torch.cat([mm(x[i : i + 1], w, kind, PATH) for i in (97, 98, 99)])  # [3, m]
    for n in list(range(2, 17)) + [31, 33, 64, 65, 100]:
        got = mm(x[-n:], w, kind, PATH)[-min(n, 3):]  # the three rows ride last, behind n - 3 others
        assert torch.equal(got, alone[-min(n, 3):]), n


@pytest.mark.parametrize("order", ORDERS)
def test_every_path_this_cpu_runs_gives_the_same_bits(order):
    # Each order is one summation order on AVX-512, AVX2 and the scalar path: a capped node computes
    # what an uncapped one does.
    for kind in ("q4_1", "q8_0"):
        w, x = random_blocks(100, 1536, kind, order_revealing=True), rows(37, 1536, order_revealing=True)
        outs = [ORDERS[order](x, w, kind, isa) for isa in RUNNABLE]
        assert all(torch.equal(o, outs[0]) for o in outs[1:]), (kind, RUNNABLE)


@pytest.mark.parametrize("order", ORDERS)
def test_the_thread_count_never_changes_a_result(order):
    w, x = random_blocks(3072, 576, "q4_1", order_revealing=True), rows(40, 576, order_revealing=True)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(ORDERS[order](x, w, "q4_1", PATH))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_calls_worth_sharing_split_across_threads_and_small_ones_do_not():
    # The split is at::parallel_for's inline OpenMP code: built without -fopenmp it never happened.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert kernel.split_threads(1, 49152, 612) == 2  # the head at one row: 30 MB
        assert kernel.split_threads(1, 3072, 360) == 2  # gate|up at one row: 1.1 MB
        assert kernel.split_threads(1, 960, 360) == 1  # qkv at one row: waking a thread costs more
        assert kernel.split_threads(8, 960, 360) == 2  # ... but not at eight rows
        torch.set_num_threads(1)
        assert kernel.split_threads(428, 3072, 360) == 1
    finally:
        torch.set_num_threads(before)


def test_the_path_follows_the_cpu_flags_and_the_cap():
    assert kernel.isa_for(frozenset({"avx2", "fma", "f16c", "avx512f"})) == "avx512"
    assert kernel.isa_for(frozenset({"avx2", "fma", "f16c"})) == "avx2"
    assert kernel.isa_for(frozenset({"avx", "sse4_2"})) == "baseline"
    if os.environ.get("TWINTEE_CPU_ISA") == "avx2":
        assert PATH == "avx2"


@pytest.mark.parametrize("order", ORDERS)
def test_malformed_blocks_are_refused(order):
    with pytest.raises(RuntimeError, match="row bytes"):
        ORDERS[order](rows(1, 576), random_blocks(8, 512, "q4_1"), "q4_1", PATH)


@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
def test_embedding_rows_are_the_dequantized_rows_bit_for_bit(kind):
    table = random_blocks(300, 576, kind, seed=3)
    blocks = table.view(300, -1, BLOCK_BYTES[kind])
    # scales and minimums at float16's edges: the largest, subnormal, negative, zero
    for i, bits in enumerate((0x7BFF, 0x0001, 0xBC00, 0x0000)):
        blocks[7 + i, :, 0:2] = torch.tensor([bits & 0xFF, bits >> 8], dtype=torch.uint8)
        if kind == "q4_1":
            blocks[20 + i, :, 2:4] = torch.tensor([bits & 0xFF, bits >> 8], dtype=torch.uint8)
    ids = torch.tensor([0, 299, 7, 8, 9, 10, 20, 21, 22, 23, 7, 150])
    got = kernel.rows(table, ids, kind)
    assert got.shape == (len(ids), 576)
    assert torch.equal(got.view(torch.int32), dequantize(table[ids], kind).view(torch.int32))
    assert kernel.rows(table, torch.tensor([], dtype=torch.long), kind).shape == (0, 576)


def test_an_id_outside_the_table_is_refused():
    with pytest.raises(RuntimeError, match="outside the table"):
        kernel.rows(random_blocks(4, 64, "q8_0"), torch.tensor([4]), "q8_0")
    with pytest.raises(RuntimeError, match="outside the table"):
        kernel.rows(random_blocks(4, 64, "q8_0"), torch.tensor([-1]), "q8_0")
