"""Turns one node's shard (a state dict in transformers' names) into the fused Part, laid out for its device."""
import torch

from shared.linear import Weight
from shared.model import Layer, Part, rope_tables
from shared.q4.blocks import PROJECTION_KIND, TABLE_KIND
from shared.spec import ModelSpec



class ShardMismatch(ValueError):
    """A shard lacks a tensor its role needs, or holds one that belongs to the other node."""


def layer_range(role: str, spec: ModelSpec, split_layer: int) -> range:
    return range(0, split_layer) if role == "node1" else range(split_layer, spec.num_layers)


def shard_keys(role: str, spec: ModelSpec, split_layer: int, blocks: bool = False) -> list[str]:
    """The exact tensor names a role's shard holds (transformers' names, global layer indices).

    A shard of GGUF blocks (`blocks`, TWINTEE_DTYPE=q4_1) names each quantized tensor after its
    format ("....q_proj.weight.q4_1", "lm_head.weight.q8_0"), so a shard says what it holds."""
    proj, table = (f".{PROJECTION_KIND}", f".{TABLE_KIND}") if blocks else ("", "")
    projections = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    keys = []
    for i in layer_range(role, spec, split_layer):
        keys += [f"model.layers.{i}.{name}.weight" for name in ("input_layernorm", "post_attention_layernorm")]
        keys += [f"model.layers.{i}.{name}.weight{proj}" for name in projections]
        if spec.attention_bias:
            keys += [f"model.layers.{i}.self_attn.{p}_proj.bias" for p in "qkv"]
    keys += [f"model.embed_tokens.weight{table}"] if role == "node1" else ["model.norm.weight", f"lm_head.weight{table}"]
    return keys


def _take(sd: dict, key: str, dtype: torch.dtype) -> torch.Tensor:
    return sd.pop(key).to(dtype)


def fuse_layer(sd: dict, i: int, dtype: torch.dtype, device: str) -> Layer:
    p = f"model.layers.{i}."
    qkv = [_take(sd, f"{p}self_attn.{n}_proj.weight", dtype) for n in "qkv"]
    has_bias = f"{p}self_attn.q_proj.bias" in sd
    bias = torch.cat([_take(sd, f"{p}self_attn.{n}_proj.bias", dtype) for n in "qkv"]) if has_bias else None
    gate_up = [_take(sd, f"{p}mlp.{n}_proj.weight", dtype) for n in ("gate", "up")]
    return Layer(
        ln1=_take(sd, f"{p}input_layernorm.weight", dtype),
        wqkv=Weight(torch.cat(qkv), device),  # [(H + 2 Hkv) hd, D]
        bqkv=bias,
        wo=Weight(_take(sd, f"{p}self_attn.o_proj.weight", dtype), device),
        ln2=_take(sd, f"{p}post_attention_layernorm.weight", dtype),
        wgu=Weight(torch.cat(gate_up), device),  # [2F, D]
        wdown=Weight(_take(sd, f"{p}mlp.down_proj.weight", dtype), device),
    )


def build_part(role: str, spec: ModelSpec, split_layer: int, sd: dict, dtype: torch.dtype, max_positions: int,
               device: str = "cpu") -> Part:
    """Consumes `sd` (tensors are popped as they are fused, so peak memory stays near one copy).

    The projections are placed on `device` here; the small tensors are moved by the caller.
    """
    expected = set(shard_keys(role, spec, split_layer))
    if set(sd) != expected:
        missing, extra = sorted(expected - set(sd))[:3], sorted(set(sd) - expected)[:3]
        raise ShardMismatch(f"{role} shard does not match its role: missing {missing}, unexpected {extra}")
    layers = [fuse_layer(sd, i, dtype, device) for i in layer_range(role, spec, split_layer)]
    cos, sin = rope_tables(spec, max_positions, dtype)
    is_head = role == "node2"
    return Part(
        spec=spec,
        first_layer=0 if role == "node1" else split_layer,
        layers=layers,
        embed=None if is_head else _take(sd, "model.embed_tokens.weight", dtype),
        norm=_take(sd, "model.norm.weight", dtype) if is_head else None,
        head=Weight(_take(sd, "lm_head.weight", dtype), device) if is_head else None,  # [V, D]
        cos=cos,
        sin=sin,
    )
