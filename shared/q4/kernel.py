"""Loads the q4 kernel library and calls it: float32 rows times a weight's GGUF blocks, on the CPU path
chosen from the CPU's flags (shared/cpu.py, so TWINTEE_CPU_ISA=avx2 takes the AVX2 path).

Every path sums each output in one fixed order (lanes.h), so a row's result is the same alone or in
any batch, at any thread count, and the same on AVX-512, AVX2 and the scalar path.
"""
import torch

from shared.q4.build import LIBRARY

ISA_CODES = {"baseline": 0, "avx2": 1, "avx512": 2}
KIND_CODES = {"q4_1": 0, "q8_0": 1}
# What each path's translation unit is compiled for (shared/q4/build.py).
ISA_NEEDS = {"avx512": {"avx512f", "fma", "f16c"}, "avx2": {"avx2", "fma", "f16c"}, "baseline": set()}


class KernelNotBuilt(RuntimeError):
    """The compiled library is missing: `make setup` (or `make kernels`) builds it."""


_loaded = False


def load() -> None:
    global _loaded
    if _loaded:
        return
    if not LIBRARY.exists():
        raise KernelNotBuilt(f"the q4 kernel is not built ({LIBRARY} is missing): run `make kernels`")
    torch.ops.load_library(str(LIBRARY))
    _loaded = True


def isa_for(flags: frozenset[str]) -> str:
    """The widest path this CPU's flags (after any cap) can run."""
    return next(isa for isa in ("avx512", "avx2", "baseline") if ISA_NEEDS[isa] <= flags)


def mm(x: torch.Tensor, blocks: torch.Tensor, kind: str, isa: str) -> torch.Tensor:
    # x: [N, K] float32, blocks: [M, K / 32 * bytes] uint8 -> [N, M] float32
    load()
    return torch.ops.twintee_q4.mm(x.contiguous(), blocks, KIND_CODES[kind], ISA_CODES[isa])


def rows(blocks: torch.Tensor, ids: torch.Tensor, kind: str) -> torch.Tensor:
    """blocks: [R, K / 32 * bytes] uint8, ids: [N] int64 -> [N, K] float32, those rows dequantized exactly."""
    load()
    return torch.ops.twintee_q4.rows(blocks, ids, KIND_CODES[kind])


def prompt_mm(x: torch.Tensor, blocks: torch.Tensor, kind: str, isa: str) -> torch.Tensor:
    """As `mm`, in the prompt order (panel.h): for the rows of a prompt, never a token's decode row."""
    load()
    return torch.ops.twintee_q4.prompt_mm(x.contiguous(), blocks, KIND_CODES[kind], ISA_CODES[isa])


def decode_layers(x: torch.Tensor, weights: dict[str, list[torch.Tensor]], caches: list[tuple[torch.Tensor, torch.Tensor]],
                  positions: list[int], rope: tuple[torch.Tensor, torch.Tensor], shape: tuple[int, int, int],
                  eps: float, isa: str) -> torch.Tensor:
    """x: [N, D], one new token a row, through every layer of `weights` (lists, one tensor a layer, of
    ln1, wqkv, bqkv (empty: none), wo, ln2, wgu, wdown) -> [N, D]. Row r attends its cache pair
    ([L, Hkv, C, hd] each) at positions [0, positions[r]], after writing its key and value there.
    `shape`: (heads, kv_heads, ffn); `rope`: the (cos, sin) tables [P, hd]."""
    load()
    w = weights
    return torch.ops.twintee_q4.decode_layers(
        x.contiguous(), w["ln1"], w["wqkv"], w["bqkv"], w["wo"], w["ln2"], w["wgu"], w["wdown"],
        [k for k, _ in caches], [v for _, v in caches], positions, rope[0], rope[1], *shape, eps, ISA_CODES[isa])


def split_threads(n: int, m: int, row_bytes: int) -> int:
    """How many threads `mm` runs an [n, K] x [m, row_bytes] call on, at torch's current thread count."""
    load()
    return torch.ops.twintee_q4.split_threads(n, m, row_bytes)
