"""How each node's process uses and hands back memory (glibc malloc; the mallopt calls are no-ops elsewhere).

Two kinds of large blocks, treated apart:
- KV caches: megabytes each, allocated by whichever thread opens a session, living as long as it.
  Each is its own anonymous mapping (`mapped_zeros`), unmapped the moment its session ends. Left to
  malloc they came from per-thread heap arenas after the first wave of sessions (glibc raises its
  mmap threshold each time a large mapped block is freed), and an arena's top can only shrink past its
  last live block: three waves of 32 generations left node2 hundreds of MB above its post-load size
  with no session open.
- A step's activations: up to tens of MB for a prefill, freed when the step ends and needed again by
  the next. These stay in malloc's heaps, below a fixed 32 MiB mmap threshold and a trim threshold
  above it, so a step reuses the pages the last one used. With every block over 1 MiB mapped afresh
  (how this module kept caches out of the heaps before), each prefill page-faulted its activations in
  again: ~6% of node2's profile of a 428-token prefill in the kernel's fault path, and the in-process
  prefill 8% slower (AVX2 imitation, q4_1: ~430 against ~395 ms a node).
Two arenas bound the per-thread heaps, and `trim()` when the last session leaves returns what they hold.
"""
import ctypes
import math
import mmap

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest on 64-bit; a 2,048-token prefill's widest activation is 25 MB
TRIM_THRESHOLD_BYTES = 64 << 20  # free space a heap keeps at its top between steps
ARENAS = 2


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def return_freed_memory() -> None:
    """Call once at process start, before request threads exist."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        libc.mallopt(M_ARENA_MAX, ARENAS)


def trim() -> None:
    """Returns the heaps' free pages to the OS (after loading, and when the last session leaves)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def mapped_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zero tensor in an anonymous mapping of its own, unmapped when the tensor is freed (it holds
    the mapping): memory that lives as long as a session, never in malloc's heaps."""
    n = math.prod(shape)
    if n == 0:
        return torch.zeros(shape, dtype=dtype)
    buffer = mmap.mmap(-1, n * dtype.itemsize)  # zero-filled by the kernel
    return torch.frombuffer(buffer, dtype=dtype, count=n).view(shape)
