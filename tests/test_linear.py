"""The projections' packed layout: same products as a plain matmul, and batch-invariant rows."""
import pytest
import torch
import torch.nn.functional as F

from shared.linear import linear, packs_on, prepare


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_packed_linear_equals_plain_matmul(dtype, tol):
    torch.manual_seed(0)
    w, b, x = torch.randn(960, 576).to(dtype), torch.randn(960).to(dtype), torch.randn(5, 576).to(dtype)
    packed = prepare(w, "cpu")
    assert packed.is_mkldnn == packs_on("cpu")
    ref = F.linear(x.float(), w.float(), b.float())
    torch.testing.assert_close(linear(x, packed, b).float(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    assert linear(x, packed).shape == (5, 960)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_row_is_the_same_alone_or_in_any_batch(dtype):
    # What lets 8 concurrent streams produce exactly their single-stream tokens.
    torch.manual_seed(1)
    w = prepare(torch.randn(3072, 576).to(dtype), "cpu")
    x = torch.randn(16, 576).to(dtype)
    alone = linear(x[5:6].clone(), w)
    for n in (2, 4, 8, 16):
        batch = torch.cat([x[: n - 1], x[5:6]])  # the row rides last, behind n - 1 others
        assert torch.equal(linear(batch, w)[-1], alone[0])


def test_other_devices_keep_transformers_layout():
    w = torch.randn(8, 4)
    assert prepare(w, "meta").shape == (8, 4) and not prepare(w, "meta").is_mkldnn
