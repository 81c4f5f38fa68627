"""The projections' packed layout: same products as a plain matmul, and batch-invariant rows."""
import dataclasses
import os

import pytest
import torch
import torch.nn.functional as F

from shared.linear import (PROBE_BATCHES, ROW_CHOICES, BlockWeight, Weight, _packed, compute_report, linear,
                           order_revealing)
from shared.q4.kernel import isa_for
from shared.config import ModelSettings
from tests.conftest import BF16, CPU

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # SmolLM2's qkv, o, gate|up, down
HEAD = (49152, 576)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), pytest.param(*BF16.values, 2e-2, marks=BF16.marks)])
def test_packed_linear_equals_plain_matmul(dtype, tol):
    torch.manual_seed(0)
    w, b, x = torch.randn(960, 576).to(dtype), torch.randn(960).to(dtype), torch.randn(5, 576).to(dtype)
    packed = Weight(w, "cpu")
    assert packed.data.is_mkldnn == torch.backends.mkldnn.is_available()
    ref = F.linear(x.float(), w.float(), b.float())
    for rows in (1, 5):
        torch.testing.assert_close(linear(x[:rows], packed, b).float(), ref[:rows], rtol=tol,
                                   atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("shape", SHAPES + [HEAD])
def test_a_row_is_the_same_alone_or_in_any_batch(dtype, shape):
    # What lets concurrent streams produce exactly their single-stream tokens, including beside
    # another sequence's prefill (batches past `max_rows`, where a kernel may change, run chunked).
    raw, x = order_revealing(shape, dtype, 100, seed=1)  # not the probe's values
    w = Weight(raw, "cpu")
    alone = torch.cat([linear(x[i : i + 1].clone(), w) for i in (97, 98, 99)])  # [3, out]
    assert w.rows.min_rows in ROW_CHOICES
    for n in (2, 3, 4, 5, 8, 16, 31, 32, 33, 40, 64, 100):
        k = min(n, 3)  # the three rows ride last, behind n - 3 others
        assert torch.equal(linear(x[-n:], w)[-k:], alone[-k:]), n


def test_other_devices_keep_transformers_layout():
    w = Weight(torch.randn(8, 4), "meta")
    assert w.data.shape == (8, 4) and not w.data.is_mkldnn
    assert w.nbytes == 8 * 4 * 4


@pytest.mark.parametrize("shape", SHAPES)
def test_the_probe_chooses_the_fewest_rows_that_keep_a_row_batch_invariant(shape):
    # Padding costs time (the head: 8.1 ms one row, 8.8 ms four): every smaller choice than the
    # probe's must really break invariance on this CPU (on AVX-512: the down projection alone).
    raw, x = order_revealing(shape, torch.float32, max(PROBE_BATCHES), seed=2)
    w = Weight(raw, "cpu")
    for rows in [r for r in ROW_CHOICES if r < w.rows.min_rows]:
        alone = _packed(x[-1:], w.data, rows)[0]
        assert any(not torch.equal(_packed(x[-n:], w.data, rows)[-1], alone) for n in PROBE_BATCHES)


def test_health_names_the_cpu_and_the_kernel_path():
    Weight(torch.randn(960, 576), "cpu")
    report = compute_report(ModelSettings.from_env(os.environ))  # as the node reads it, cap included
    assert report["kernel"] == "onednn-packed" and report["isa"] == CPU.isa
    assert set(report["flags"]) == set(CPU.flags) and report["rows"]["960x576 float32"]["min"] in ROW_CHOICES


@pytest.mark.parametrize("shape", SHAPES + [HEAD])
def test_a_row_is_the_same_alone_or_in_any_batch_on_gguf_blocks(shape):
    # TWINTEE_DTYPE=q4_1: the q4 kernel on the path this CPU takes (AVX2 in the capped re-run).
    from tests.test_q4_kernel import random_blocks, rows

    kind = "q8_0" if shape == HEAD else "q4_1"
    w = BlockWeight(random_blocks(*shape, kind, order_revealing=True), kind, shape[1], isa_for(CPU.flags))
    x = rows(100, shape[1], order_revealing=True)
    alone = torch.cat([linear(x[i : i + 1].clone(), w) for i in (97, 98, 99)])  # [3, out]
    for n in (2, 3, 4, 5, 7, 8, 9, 16, 31, 32, 33, 64, 100):
        k = min(n, 3)
        assert torch.equal(linear(x[-n:], w)[-k:], alone[-k:]), n


def test_health_names_the_q4_kernel_path():
    settings = dataclasses.replace(ModelSettings.from_env(os.environ), dtype="q4_1")
    assert compute_report(settings)["kernel"] == f"q4-{'avx2' if CPU.capped_to == 'avx2' else isa_for(CPU.flags)}"
