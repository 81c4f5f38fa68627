"""How the projection weights are laid out, and the one function that multiplies by them.

On the CPU each weight is reordered once, at load, into oneDNN's blocked GEMM layout. Plain
`x @ W` (MKL) runs batch 1 as a fast GEMV but repacks the whole weight on every call for any
batch above 1, so a decode step of 8 sequences cost 2.6x one of a single sequence; over the
packed layout batch 8 costs about 1.3x batch 1 and a ~400-token prefill is ~30% faster.

It also makes a row's result independent of the batch it rides in, bit for bit, so batching
cannot change a stream's tokens. oneDNN keeps one summation order for every batch of two rows
or more, but for some shapes (here: the down projection, 1536 inputs) a single row takes a
kernel that sums in another order; a probe at load finds those weights and `linear` gives
them a second row, which costs ~40 us per call where it applies. Elsewhere (CUDA) the weight
stays as transformers stores it.
"""
import torch
import torch.nn.functional as F

# The batch size oneDNN tunes the packed layout for. Measured on the target CPU (15 layers of
# SmolLM2, one thread): a hint of 64 is within 5% of the best at every batch from 1 to 428 tokens.
PACK_FOR_BATCH = 64
PROBE_ROWS = 32
# Kernel choice depends on the shape, not the values: one weight caught differing marks its shape.
_SINGLE_ROW_DIFFERS: set[tuple[tuple[int, ...], torch.dtype]] = set()


class Weight:
    """A projection's weight, [out, in] as transformers stores it, laid out for `linear`."""

    __slots__ = ("data", "shape", "dtype")

    def __init__(self, w: torch.Tensor, device: str):
        self.shape, self.dtype = tuple(w.shape), w.dtype
        if device == "cpu" and torch.backends.mkldnn.is_available():
            self.data = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), PACK_FOR_BATCH)
        else:
            self.data = w.to(device).contiguous()
        if self.data.is_mkldnn and not self.pad_single_row and not _batch_invariant(self):
            _SINGLE_ROW_DIFFERS.add((self.shape, self.dtype))

    @property
    def pad_single_row(self) -> bool:
        return (self.shape, self.dtype) in _SINGLE_ROW_DIFFERS

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize


def linear(x: torch.Tensor, w: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    # x: [N, in] -> [N, out]
    if not w.data.is_mkldnn:
        return F.linear(x, w.data, bias)
    if w.pad_single_row and x.shape[0] == 1:
        return _packed(x.expand(2, -1).contiguous(), w, bias)[:1]
    return _packed(x, w, bias)


def _packed(x: torch.Tensor, w: Weight, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w.data, bias, "none", [], "")


@torch.inference_mode()
def _batch_invariant(w: Weight) -> bool:
    """Whether rows alone sum in the same order as in a batch (probed, not assumed).

    In bfloat16 a different order shows only in the rare output that rounds differently: one
    probe of 16 rows caught 24 of SmolLM2's 30 down projections, so the probe takes 32 rows and a
    verdict holds for every weight of the shape (the kernel is chosen by shape).
    """
    x = torch.randn(PROBE_ROWS, w.shape[1], generator=torch.Generator().manual_seed(0)).to(w.dtype)
    alone = torch.cat([_packed(x[i : i + 1].clone(), w, None) for i in range(PROBE_ROWS)])
    return torch.equal(alone, _packed(x, w, None))
