"""A node's part of a Llama-family decoder as plain functions over tensors: the lean path.

Weights are fused (q|k|v and gate|up) and laid out for the fast GEMM at load (shared.linear) so
every projection is one call; all sequences of a step share those matmuls and only attention runs
per sequence, against that sequence's preallocated cache.
"""
from dataclasses import dataclass
from functools import cached_property
from itertools import groupby

import torch
import torch.nn.functional as F

from shared.kv import SessionCache
from shared.linear import BlockWeight, Weight, linear
from shared.q4 import kernel as q4_kernel
from shared.spec import ModelSpec


@dataclass
class Layer:
    ln1: torch.Tensor  # [D]
    wqkv: Weight  # [(H + 2 Hkv) hd, D]
    bqkv: torch.Tensor | None  # [(H + 2 Hkv) hd] (Qwen2 only)
    wo: Weight  # [D, H hd]
    ln2: torch.Tensor  # [D]
    wgu: Weight  # [2F, D]
    wdown: Weight  # [D, F]


@dataclass
class Part:
    """The weights one node owns: node1 has `embed`, node2 has `norm` and `head`."""

    spec: ModelSpec
    first_layer: int
    layers: list[Layer]
    embed: torch.Tensor | None  # [V, D]
    norm: torch.Tensor | None  # [D]
    head: Weight | None  # [V, D]
    cos: torch.Tensor  # [P, hd]
    sin: torch.Tensor  # [P, hd]

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].wqkv.dtype if self.layers else (self.embed if self.embed is not None else self.head).dtype

    def weight_bytes(self) -> int:
        tensors = [self.embed, self.norm, self.head] + [t for l in self.layers for t in vars(l).values()]
        return sum(t.nbytes for t in tensors if t is not None)

    @cached_property
    def block_lists(self) -> dict[str, list[torch.Tensor]]:
        """The q4 decode call's weights, one list a kind, one tensor a layer (`decode_blocks`): gathered
        once, not on every step."""
        out = {name: [getattr(l, name) for l in self.layers] for name in ("ln1", "ln2")}
        out |= {name: [getattr(l, name).data for l in self.layers] for name in ("wqkv", "wo", "wgu", "wdown")}
        out["bqkv"] = [l.bqkv for l in self.layers] if self.layers[0].bqkv is not None else []
        return out


@dataclass
class Seq:
    """One sequence's slice of a step: `n` new tokens written at positions [pos, pos + n)."""

    cache: SessionCache
    pos: int
    n: int


def rope_tables(spec: ModelSpec, positions: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Same float32 arithmetic as transformers' default rotary embedding, so angles match bit for bit.
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, spec.head_dim, 2, dtype=torch.int64).float() / spec.head_dim))
    freqs = torch.arange(positions, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [P, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [P, hd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    # x: [N, D]; computed in float32 whatever the weights' dtype, as transformers does.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [N, h, hd]; cos, sin: [N, 1, hd]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq: Seq, li: int, scale: float) -> torch.Tensor:
    """q: [n, H, hd], k, v: [n, Hkv, hd] -> [n, H hd], after writing k, v into the cache."""
    end = seq.pos + seq.n
    seq.cache.k[li, :, seq.pos : end] = k.transpose(0, 1)
    seq.cache.v[li, :, seq.pos : end] = v.transpose(0, 1)
    keys, vals = seq.cache.k[li, :, :end], seq.cache.v[li, :, :end]  # [Hkv, S, hd]
    if seq.n == 1 and q.dtype == torch.float32:
        # One new token: two small matmuls and a softmax cost a quarter of the flash kernel's
        # set-up (37 -> ~10 us a call, 30 calls a token per node). Query head h reads KV head
        # h // group, as transformers' repeat_kv has it. (bfloat16 keeps the kernel, which
        # accumulates in float32.)
        hkv = keys.shape[0]
        scores = torch.bmm(q.view(hkv, -1, q.shape[-1]), keys.transpose(1, 2)).mul_(scale)  # [Hkv, group, S]
        return torch.bmm(scores.softmax(-1), vals).view(1, -1)  # [Hkv, group, hd] -> [1, H hd]
    keys, vals = keys.unsqueeze(0), vals.unsqueeze(0)  # [1, Hkv, S, hd]
    mask = None
    if seq.n > 1 and seq.pos > 0:  # token i of this step sees cache positions [0, pos + i]
        cols = torch.arange(end, device=q.device)
        mask = cols[None, :] <= (seq.pos + torch.arange(seq.n, device=q.device))[:, None]  # [n, S]
    # A prefill from position 0 uses the causal kernel, as transformers does, so rounding matches.
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1).unsqueeze(0), keys, vals, attn_mask=mask, scale=scale, enable_gqa=True,
        is_causal=seq.n > 1 and seq.pos == 0,
    )  # [1, H, n, hd]
    return out[0].transpose(0, 1).reshape(seq.n, -1)


def layer_forward(x: torch.Tensor, layer: Layer, li: int, spec: ModelSpec, cos, sin, seqs: list[Seq]) -> torch.Tensor:
    # x: [N, D], N = sum of the sequences' new tokens
    n_tok, hd = x.shape[0], spec.head_dim
    # On the GGUF's blocks only prompts' rows come here (run_layers), in the kernel's prompt order.
    qkv = linear(rms_norm(x, layer.ln1, spec.eps), layer.wqkv, layer.bqkv, prompt=True)  # [N, (H + 2 Hkv) hd]
    q, k, v = qkv.split([spec.heads * hd, spec.kv_heads * hd, spec.kv_heads * hd], dim=-1)
    q = apply_rope(q.view(n_tok, spec.heads, hd), cos, sin)
    k = apply_rope(k.view(n_tok, spec.kv_heads, hd), cos, sin)
    v = v.view(n_tok, spec.kv_heads, hd)
    attn = torch.empty(n_tok, spec.heads * hd, dtype=x.dtype, device=x.device)
    start = 0
    for seq in seqs:
        end = start + seq.n
        attn[start:end] = attend(q[start:end], k[start:end], v[start:end], seq, li, hd**-0.5)
        start = end
    x = x + linear(attn, layer.wo, prompt=True)
    gate, up = linear(rms_norm(x, layer.ln2, spec.eps), layer.wgu, prompt=True).split(spec.intermediate, dim=-1)  # [N, F] each
    return x + linear(F.silu(gate) * up, layer.wdown, prompt=True)


def check_segments(seqs: list[Seq]) -> None:
    """Each Seq continues its cache exactly where the previous Seq of the same cache (or the cache) ends."""
    ends: dict[int, int] = {}
    for seq in seqs:
        seq.cache.check_room(seq.pos, seq.n, held=ends.get(id(seq.cache)))
        ends[id(seq.cache)] = seq.pos + seq.n


def segments(cache, pos: int, lengths: list[int]) -> list[Seq]:
    """Consecutive Seqs of one cache from `pos`: one per length (a replay of its original steps)."""
    out = []
    for n in lengths:
        out.append(Seq(cache, pos, n))
        pos += n
    return out


def positions_of(seqs: list[Seq]) -> torch.Tensor:
    return torch.cat([torch.arange(s.pos, s.pos + s.n) for s in seqs])  # [N]


@torch.inference_mode()
def run_layers(part: Part, x: torch.Tensor, seqs: list[Seq]) -> torch.Tensor:
    """x: [N, D] hidden states of all sequences' new tokens -> [N, D] after this node's layers.

    A cache may appear in several consecutive Seqs (a session replayed into a restarted node2, one
    Seq per original step): within each layer they run in order, so each sees the keys the one
    before it wrote, and every row is computed exactly as the original steps computed it.

    On the GGUF's blocks (TWINTEE_DTYPE=q4_1) a sequence bringing one token always takes the whole-node
    kernel call (`decode_blocks`) and one bringing more the ops below, whatever it is batched with,
    so its rows are computed the same way alone or batched. Consecutive Seqs of one kind run through
    all layers together, one group after the other: a replayed cache's segments still run in order.
    """
    check_segments(seqs)
    if not fused_decode(part):
        x = layer_ops(part, x, seqs)
    else:
        outs, start = [], 0
        for one_token, group in groupby(seqs, key=lambda s: s.n == 1):
            group = list(group)
            rows = x[start : start + sum(s.n for s in group)]
            outs.append(decode_blocks(part, rows, group) if one_token else layer_ops(part, rows, group))
            start += rows.shape[0]
        x = outs[0] if len(outs) == 1 else torch.cat(outs)
    for seq in seqs:
        seq.cache.length = seq.pos + seq.n
    return x


def layer_ops(part: Part, x: torch.Tensor, seqs: list[Seq]) -> torch.Tensor:
    # x: [N, D] -> [N, D], layer by layer in torch ops
    pos = positions_of(seqs).to(x.device)
    cos, sin = part.cos[pos].unsqueeze(1), part.sin[pos].unsqueeze(1)  # [N, 1, hd]
    for li, layer in enumerate(part.layers):
        x = layer_forward(x, layer, li, part.spec, cos, sin, seqs)
    return x


def fused_decode(part: Part) -> bool:
    return bool(part.layers) and isinstance(part.layers[0].wqkv, BlockWeight)


def decode_blocks(part: Part, x: torch.Tensor, seqs: list[Seq]) -> torch.Tensor:
    """x: [N, D], one new token a sequence -> [N, D] after every layer, in one call of the q4 kernel
    library (shared/q4/decode.cpp): at one row, the ~30 torch ops a layer cost more than its weights."""
    spec = part.spec
    return q4_kernel.decode_layers(x, part.block_lists, [(s.cache.k, s.cache.v) for s in seqs], [s.pos for s in seqs],
                                   (part.cos, part.sin), (spec.heads, spec.kv_heads, spec.intermediate), spec.eps,
                                   part.layers[0].wqkv.isa)


@torch.inference_mode()
def embed(part: Part, ids: torch.Tensor) -> torch.Tensor:
    return part.embed[ids]  # ids: [N] -> [N, D]


@torch.inference_mode()
def logits(part: Part, x: torch.Tensor) -> torch.Tensor:
    # x: [B, D] (each sequence's last position) -> [B, V] in float32 for sampling
    return linear(rms_norm(x, part.norm, part.spec.eps), part.head).float()
