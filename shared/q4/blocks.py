"""The GGUF block formats a q4_1 shard keeps, as the file stores them, and their exact dequantization.

A Q4_1 block holds 32 weights as a float16 scale d, a float16 minimum m and 16 bytes of 4-bit codes
(weight j in the low nibble of byte j, weight j + 16 in its high nibble): w = d * q + m. A Q8_0 block
holds a float16 scale and 32 int8 codes: w = d * q. d * q is exact in float32 (11 + 8 bits at most),
so these functions give the float32 shard's values bit for bit, as gguf-py's dequantize does.
"""
import torch

BLOCK = 32  # weights per block, both formats
BLOCK_BYTES = {"q4_1": 20, "q8_0": 34}
# What each tensor of a q4_1 shard is stored as: the projections in the file's Q4_1, the embedding
# (node1) and its tied copy, the head (node2), in the file's Q8_0.
PROJECTION_KIND, TABLE_KIND = "q4_1", "q8_0"


class BadBlocks(ValueError):
    """A block tensor's size does not fit its format and the weight's shape."""


def row_bytes(kind: str, k: int) -> int:
    if k % BLOCK:
        raise BadBlocks(f"{kind} rows need a multiple of {BLOCK} inputs, got {k}")
    return k // BLOCK * BLOCK_BYTES[kind]


def check(blocks: torch.Tensor, kind: str, k: int) -> None:
    if blocks.dtype != torch.uint8 or blocks.dim() != 2 or blocks.shape[1] != row_bytes(kind, k):
        raise BadBlocks(f"{kind} blocks for {k} inputs must be uint8 [rows, {row_bytes(kind, k)}], "
                        f"got {blocks.dtype} {list(blocks.shape)}")


def dequantize(blocks: torch.Tensor, kind: str) -> torch.Tensor:
    """blocks: uint8 [R, nb * bytes] -> float32 [R, nb * 32], exactly the file's float32 values."""
    r = blocks.shape[0]
    b = blocks.reshape(r, -1, BLOCK_BYTES[kind])  # [R, nb, bytes]
    d = b[..., 0:2].contiguous().view(torch.float16).float()  # [R, nb, 1]
    if kind == "q8_0":
        q = b[..., 2:].contiguous().view(torch.int8).float()  # [R, nb, 32]
        return (q * d).reshape(r, -1)
    m = b[..., 2:4].contiguous().view(torch.float16).float()
    qs = b[..., 4:]  # [R, nb, 16]
    q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).float()  # [R, nb, 32]: low nibbles first
    return (d * q + m).reshape(r, -1)
