"""The projections' packed layout: same products as a plain matmul, and batch-invariant rows."""
import pytest
import torch
import torch.nn.functional as F

from shared.linear import Weight, linear

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # SmolLM2's qkv, o, gate|up, down


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_packed_linear_equals_plain_matmul(dtype, tol):
    torch.manual_seed(0)
    w, b, x = torch.randn(960, 576).to(dtype), torch.randn(960).to(dtype), torch.randn(5, 576).to(dtype)
    packed = Weight(w, "cpu")
    assert packed.data.is_mkldnn == torch.backends.mkldnn.is_available()
    ref = F.linear(x.float(), w.float(), b.float())
    for rows in (1, 5):
        torch.testing.assert_close(linear(x[:rows], packed, b).float(), ref[:rows], rtol=tol,
                                   atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_a_row_is_the_same_alone_or_in_any_batch(dtype, shape):
    # What lets concurrent streams produce exactly their single-stream tokens.
    torch.manual_seed(1)
    w = Weight(torch.randn(*shape).to(dtype), "cpu")
    x = torch.randn(16, shape[1]).to(dtype)
    alone = linear(x[5:6].clone(), w)
    for n in (2, 3, 4, 5, 8, 16):
        batch = torch.cat([x[: n - 1], x[5:6]])  # the row rides last, behind n - 1 others
        assert torch.equal(linear(batch, w)[-1], alone[0])


def test_other_devices_keep_transformers_layout():
    w = Weight(torch.randn(8, 4), "meta")
    assert w.data.shape == (8, 4) and not w.data.is_mkldnn
    assert w.nbytes == 8 * 4 * 4
