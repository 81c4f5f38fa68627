"""How the projection weights are laid out, and the one function that multiplies by them.

On the CPU each weight is reordered once, at load, into oneDNN's blocked GEMM layout. Plain
`x @ W` (MKL) runs batch 1 as a fast GEMV but repacks the whole weight on every call for any
batch above 1, so a decode step of 8 sequences cost 2.6x one of a single sequence; over the
packed layout batch 8 costs about 1.3x batch 1 and a ~400-token prefill is ~30% faster.

oneDNN sums a row in the same order whatever the batch, from two rows up; a single row takes
another kernel, which on this CPU is both slower than the four-row one (the head: 7.5 vs 5.9 ms
in float32) and, for some shapes (the 1536-input down projection), sums in another order. So
`linear` never runs fewer than MIN_ROWS rows: a step of one to three sequences is padded, which
makes a sequence's result bit-identical alone or in any batch (batching cannot change a
stream's tokens) and a single stream ~10% faster. Elsewhere (CUDA) the weight stays as
transformers stores it.
"""
import torch
import torch.nn.functional as F

# The batch size oneDNN tunes the packed layout for. Measured on the target CPU (15 layers of
# SmolLM2, one thread): a hint of 64 is within 5% of the best at every batch from 1 to 428 tokens.
PACK_FOR_BATCH = 64
MIN_ROWS = 4


class Weight:
    """A projection's weight, [out, in] as transformers stores it, laid out for `linear`."""

    __slots__ = ("data", "shape", "dtype")

    def __init__(self, w: torch.Tensor, device: str):
        self.shape, self.dtype = tuple(w.shape), w.dtype
        if device == "cpu" and torch.backends.mkldnn.is_available():
            self.data = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), PACK_FOR_BATCH)
        else:
            self.data = w.to(device).contiguous()

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize


def linear(x: torch.Tensor, w: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    # x: [N, in] -> [N, out]
    if not w.data.is_mkldnn:
        return F.linear(x, w.data, bias)
    n = x.shape[0]
    if n < MIN_ROWS:
        x = torch.cat([x, x.new_zeros(MIN_ROWS - n, x.shape[1])])
    return torch.ops.mkldnn._linear_pointwise(x, w.data, bias, "none", [], "")[:n]
