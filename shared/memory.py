"""How each node's process hands freed memory back to the OS (glibc malloc; a no-op elsewhere).

KV caches are megabytes each and are allocated by whichever request thread opens a session. glibc
raises its mmap threshold each time a large mmapped block is freed, so after the first wave of
sessions their caches come from per-thread heap arenas instead, and an arena's top can only shrink
past its last live block: three waves of 32 generations left node2 hundreds of MB above its
post-load size with no session open. A fixed threshold keeps every large block its own mapping
(unmapped the moment it is freed), two arenas bound the per-thread heaps, and `trim()` when the last
session leaves returns what the heaps still hold.
"""
import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD_BYTES = 1 << 20  # a 1-token KV cache row of one layer is ~0.4 KB; whole caches are MBs
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
        libc.mallopt(M_ARENA_MAX, ARENAS)


def trim() -> None:
    """Returns the heaps' free pages to the OS (after loading, and when the last session leaves)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
