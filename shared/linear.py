"""How the projection weights are laid out, and the one function that multiplies by them.

On the CPU each weight is reordered once, at load, into oneDNN's blocked GEMM layout. Plain
`x @ W` (MKL) runs batch 1 as a fast GEMV but repacks the whole weight on every call for any
batch above 1, so a decode step of 8 sequences cost 2.6x one of a single sequence; over the
packed layout batch 8 costs about what batch 1 does, a ~400-token prefill is ~30% faster, and
each row's result is independent of the batch it rides in (bit for bit), so batching cannot
change a stream's tokens. Elsewhere (CUDA) the weight stays as transformers stores it.
"""
import torch
import torch.nn.functional as F

# The batch size oneDNN tunes the packed layout for. Measured on the target CPU (15 layers of
# SmolLM2, one thread): a hint of 64 is within 5% of the best at every batch from 1 to 428 tokens.
PACK_FOR_BATCH = 64


def packs_on(device: str) -> bool:
    return device == "cpu" and torch.backends.mkldnn.is_available()


def prepare(w: torch.Tensor, device: str) -> torch.Tensor:
    """w: [out, in] as transformers stores it -> the layout `linear` multiplies fastest on `device`."""
    if packs_on(device):
        return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), PACK_FOR_BATCH)
    return w.to(device).contiguous()


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    # x: [N, in], w from `prepare` -> [N, out]
    if w.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")
    return F.linear(x, w, bias)
