"""How the projection weights are laid out, and the one function that multiplies by them.

On the CPU each weight is reordered once, at load, into oneDNN's blocked GEMM layout. Plain
`x @ W` (MKL) runs batch 1 as a fast GEMV but repacks the whole weight on every call for any
batch above 1, so a decode step of 8 sequences cost 2.6x one of a single sequence; over the
packed layout batch 8 costs about 1.3x batch 1 and a ~400-token prefill is ~30% faster.

A stream's tokens must not depend on what it is batched with, so a row must be summed in the same
order whatever the batch. oneDNN does that from two rows up; with fewer rows it may take another
kernel, which sums in another order for some shapes on some CPUs (on AVX-512: the 1536-input down
projection; on AVX2: none). So at load a probe finds, per weight shape, the fewest rows
(`min_rows`: 1, 2 or 4) for which a row alone equals that row in every batch tried, and `linear`
pads a smaller step to that. Some kernels also change at a larger batch (bfloat16 on an AMX Xeon:
from 33 rows, for the head and gate|up); there the probe also finds the largest batch that still
agrees (`max_rows`) and `linear` runs a larger step in chunks of that many rows, so a decode row
batched beside another sequence's prefill still sums alike. The fewest rows is also the fastest choice (the head, 49152x576, one
row: 8.1 ms on AVX-512, 10.3 ms on AVX2; four rows: 8.8 and 12.7 ms). Measured on an AVX-512 Xeon
and with oneDNN capped to AVX2 (30 layers of SmolLM2's projections, float32, one thread):

    batch                          1      4      8
    AVX-512, probed rows (1-2)    38     39     46 ms
    AVX2, probed rows (1)         46     57     68 ms   (4 rows: 58 ms at batch 1)
    AVX2, MKL F.linear            31     66     73 ms   (fastest alone, never batch-invariant)

MKL's GEMV is the fastest single row on AVX2, but no MKL path sums a row alike at every batch, so
it is never chosen: identical tokens alone or batched outrank a third of a single stream's
projection time there. Elsewhere (CUDA) the weight stays as transformers stores it.

With TWINTEE_DTYPE=q4_1 a weight stays in its GGUF blocks (`BlockWeight`) and shared.q4's kernel
multiplies float32 rows by them; it sums every output in one fixed order per kind of row (a prompt's
rows in one, a token's decode row in another, whatever the batch), so no probe and no padding are
needed there, and it reads a fifth of the bytes.
"""
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shared.q4 import kernel as q4_kernel
from shared.q4.blocks import check as check_blocks

# The batch size oneDNN tunes the packed layout for. Measured on the target CPU (15 layers of
# SmolLM2, one thread): a hint of 64 is within 5% of the best at every batch from 1 to 428 tokens.
PACK_FOR_BATCH = 64
ROW_CHOICES = (1, 2, 4)
# Every batch up to 40 (kernels switch at block sizes such as 32), then a few larger ones.
PROBE_BATCHES = tuple(range(2, 41)) + (48, 64, 65, 96, 128, 200)
PROBE_ROWS = 16  # rows compared per batch
DECODE_ROWS = 16  # a chunk must hold at least this many rows, or decode batches would be split


@dataclass(frozen=True)
class RowPlan:
    """How many rows one kernel call over a weight runs: at least `min_rows` (a smaller step is
    padded), at most `max_rows` (a larger one is chunked; None: no limit)."""

    min_rows: int = 1
    max_rows: int | None = None


class NotBatchInvariant(RuntimeError):
    """This CPU's kernel sums a row differently by batch size whatever the padding: batched streams
    could then differ from their single-stream tokens, so the node refuses to start."""


class Weight:
    """A projection's weight, [out, in] as transformers stores it, laid out for `linear`."""

    __slots__ = ("data", "shape", "dtype", "rows")

    def __init__(self, w: torch.Tensor, device: str):
        self.shape, self.dtype = tuple(w.shape), w.dtype
        if device == "cpu" and torch.backends.mkldnn.is_available():
            self.data = _pack(w)
            self.rows = row_plan_for(self.shape, self.dtype)
        else:
            self.data, self.rows = w.to(device).contiguous(), RowPlan()

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize


class BlockWeight:
    """A weight kept as the GGUF's blocks, uint8 [out, in / 32 * block bytes] (shared/q4/blocks.py), for
    `linear` on the q4 kernel path `isa` ("avx512", "avx2" or "baseline"). As an embedding table it
    gives rows by id, dequantized exactly."""

    __slots__ = ("data", "shape", "kind", "isa", "rows")
    dtype = torch.float32  # what it takes and gives: activations stay float32

    def __init__(self, blocks: torch.Tensor, kind: str, in_features: int, isa: str):
        check_blocks(blocks, kind, in_features)
        self.data, self.kind, self.isa = blocks.contiguous(), kind, isa
        self.shape, self.rows = (blocks.shape[0], in_features), RowPlan()

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    # Sized like the tensor it replaces as an embedding table: numel() * element_size() is its bytes.
    def numel(self) -> int:
        return self.data.numel()

    def element_size(self) -> int:
        return 1

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        return q4_kernel.rows(self.data, ids, self.kind)  # ids: [N] -> [N, in], as dequantize(self.data[ids])


def linear(x: torch.Tensor, w: Weight | BlockWeight, bias: torch.Tensor | None = None, prompt: bool = False) -> torch.Tensor:
    # x: [N, in] -> [N, out]. `prompt`: the rows are prompt tokens' (a prefill's), which the q4 kernel
    # sums in its prompt order (shared/q4/panel.h); a token's decode rows and the head never are.
    if isinstance(w, BlockWeight):
        y = (q4_kernel.prompt_mm if prompt else q4_kernel.mm)(x, w.data, w.kind, w.isa)
        return y if bias is None else y + bias
    if not w.data.is_mkldnn:
        return F.linear(x, w.data, bias)
    top = w.rows.max_rows
    if top is not None and x.shape[0] > top:
        return torch.cat([_packed(chunk, w.data, w.rows.min_rows, bias) for chunk in x.split(top)])
    return _packed(x, w.data, w.rows.min_rows, bias)


def kernel_path(dtype: str = "float32", flags: frozenset[str] = frozenset()) -> str:
    if dtype == "q4_1":
        return f"q4-{q4_kernel.isa_for(flags)}"
    return "onednn-packed" if torch.backends.mkldnn.is_available() else "plain"


def _pack(w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), PACK_FOR_BATCH)


def _packed(x: torch.Tensor, packed: torch.Tensor, min_rows: int, bias=None) -> torch.Tensor:
    n = x.shape[0]
    if n < min_rows:
        x = torch.cat([x, x.new_zeros(min_rows - n, x.shape[1])])
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")[:n]


# (shape, dtype) -> RowPlan, filled by the probe as the weights load (one loading thread).
_PLANS: dict[tuple, RowPlan] = {}


def row_plan_for(shape: tuple[int, int], dtype: torch.dtype) -> RowPlan:
    key = (shape, dtype)
    if key not in _PLANS:
        _PLANS[key] = probe(shape, dtype)
    return _PLANS[key]


def probe(shape: tuple[int, int], dtype: torch.dtype) -> RowPlan:
    """The fewest rows, and the most, a kernel call over a weight of this shape may run so that a
    row's result is the same alone or in any batch. The summation order depends on the shape and
    the kernel the CPU gets, not on the values (nor on the thread count: checked at 1 and 2 threads
    on both ISAs), so made-up values whose sum shows its order stand in."""
    w, x = order_revealing(shape, dtype, max(PROBE_BATCHES))  # the probed rows ride last
    packed = _pack(w)
    for rows in ROW_CHOICES:
        alone = torch.cat([_packed(x[i : i + 1], packed, rows) for i in range(len(x) - PROBE_ROWS, len(x))])  # [K, out]
        bad = next((n for n in PROBE_BATCHES if not _agrees(x, packed, rows, n, alone)), None)
        if bad is None:
            return RowPlan(rows)
        agreed = [n for n in PROBE_BATCHES if n < bad]
        if agreed and agreed[-1] >= DECODE_ROWS:
            return RowPlan(rows, agreed[-1])
    raise NotBatchInvariant(f"no row padding makes a {shape[0]}x{shape[1]} {dtype} projection batch-invariant here")


def order_revealing(shape: tuple[int, int], dtype: torch.dtype, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (weight [out, in], rows [n, in]) whose every dot product starts with a huge product and ends
    with its negation: the small products between are absorbed into the huge partial sum or not
    depending on how the kernel groups them. With plain random values a changed order flipped
    ~1 in 10,000 bfloat16 outputs (a probe of 16 rows missed a kernel change); with these, half."""
    g = torch.Generator().manual_seed(seed)
    w, x = torch.randn(shape, generator=g), torch.randn(n, shape[1], generator=g)
    w[:, 0], w[:, -1] = 2.0**14, -(2.0**14)
    x[:, 0] = x[:, -1] = 2.0**6
    return w.to(dtype), x.to(dtype)


def _agrees(x: torch.Tensor, packed: torch.Tensor, rows: int, n: int, alone: torch.Tensor) -> bool:
    k = min(n, len(alone))
    return torch.equal(_packed(x[-n:], packed, rows)[-k:], alone[-k:])


def row_plans() -> dict[str, dict]:
    """What the load-time probe chose, per weight shape (for /health and the benchmark)."""
    return {f"{s[0]}x{s[1]} {str(d).removeprefix('torch.')}": {"min": p.min_rows, "max": p.max_rows}
            for (s, d), p in _PLANS.items()}


def compute_report(settings) -> dict:
    """What /health and the benchmark say about how this node computes: the CPU's vector
    extensions (after any TWINTEE_CPU_ISA cap), the kernel path and the rows the probe chose."""
    on_cpu = settings.device == "cpu"
    return {**(settings.cpu.describe() if on_cpu else {}), "kernel": kernel_path(settings.dtype, settings.cpu.flags) if on_cpu else settings.device,
            "rows": row_plans(), "decode_threads": settings.threads or torch.get_num_threads(),
            "prefill_threads": settings.prefill_threads or os.cpu_count(),
            "openmp_wait": settings.openmp_wait or "spin (libgomp's default)",
            "openmp_spins": settings.openmp_spins or "the policy's own"}
