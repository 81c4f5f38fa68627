"""Per-session KV caches, preallocated once at the session's full capacity."""
import torch

from shared import memory
from shared.spec import ModelSpec


class CacheOverflow(ValueError):
    """A step would write past the capacity its session was opened with."""


class SessionCache:
    """Keys and values of one session for a node's own layers.

    Allocated at open time for prompt + max new tokens, so decoding never allocates or copies.
    """

    def __init__(self, spec: ModelSpec, n_layers: int, capacity: int, dtype: torch.dtype, device="cpu"):
        shape = (n_layers, spec.kv_heads, capacity, spec.head_dim)  # [L, Hkv, C, hd]
        if torch.device(device).type == "cpu":  # each its own mapping, back to the OS when the session ends
            zeros = memory.mapped_zeros
        else:
            def zeros(shape, dtype):
                return torch.zeros(shape, dtype=dtype, device=device)
        self.k, self.v = zeros(shape, dtype), zeros(shape, dtype)
        self.capacity = capacity
        self.length = 0  # positions [0, length) hold valid keys and values

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def check_room(self, pos: int, n: int, held: int | None = None) -> None:
        """`held`: the positions this cache will hold when the step reaches these n tokens (a replay's
        later segment starts where its earlier one ends); by default what it holds now."""
        held = self.length if held is None else held
        if pos != held:
            raise CacheOverflow(f"step starts at position {pos} but the cache holds {held}")
        if pos + n > self.capacity:
            raise CacheOverflow(f"{pos + n} positions exceed the session's capacity {self.capacity}")
