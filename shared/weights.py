"""Turns one node's shard (a state dict in transformers' names) into the fused Part, laid out for its device."""
import torch

from shared.linear import BlockWeight, Weight
from shared.model import Layer, Part, rope_tables
from shared.q4.blocks import BLOCK, BLOCK_BYTES, PROJECTION_KIND, TABLE_KIND
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


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)  # no copy of a lone (113 MB head) tensor


class Projections:
    """Makes a layer's weights from the shard: float32 tensors packed for oneDNN, or with `isa` (a q4
    kernel path, TWINTEE_DTYPE=q4_1) the file's blocks, fused the same way (blocks are per row)."""

    def __init__(self, sd: dict, dtype: torch.dtype, device: str, isa: str | None):
        self.sd, self.dtype, self.device, self.isa = sd, dtype, device, isa

    def weight(self, names: list[str], kind: str = PROJECTION_KIND) -> Weight | BlockWeight:
        if self.isa is None:
            return Weight(_cat([_take(self.sd, n, self.dtype) for n in names]), self.device)
        blocks = [self.sd.pop(f"{n}.{kind}") for n in names]
        return BlockWeight(_cat(blocks), kind, self.in_features(blocks[0], kind), self.isa)

    @staticmethod
    def in_features(blocks: torch.Tensor, kind: str) -> int:
        return blocks.shape[1] // BLOCK_BYTES[kind] * BLOCK


def fuse_layer(sd: dict, i: int, dtype: torch.dtype, device: str, isa: str | None = None) -> Layer:
    p, make = f"model.layers.{i}.", Projections(sd, dtype, device, isa)
    has_bias = f"{p}self_attn.q_proj.bias" in sd
    bias = torch.cat([_take(sd, f"{p}self_attn.{n}_proj.bias", dtype) for n in "qkv"]) if has_bias else None
    return Layer(
        ln1=_take(sd, f"{p}input_layernorm.weight", dtype),
        wqkv=make.weight([f"{p}self_attn.{n}_proj.weight" for n in "qkv"]),  # [(H + 2 Hkv) hd, D]
        bqkv=bias,
        wo=make.weight([f"{p}self_attn.o_proj.weight"]),
        ln2=_take(sd, f"{p}post_attention_layernorm.weight", dtype),
        wgu=make.weight([f"{p}mlp.{n}_proj.weight" for n in ("gate", "up")]),  # [2F, D]
        wdown=make.weight([f"{p}mlp.down_proj.weight"]),
    )


def check_format(role: str, sd: dict, isa: str | None) -> None:
    """A q4_1 node needs a shard of blocks, any other a float32 one: say which release to use."""
    has_blocks = any(k.endswith(f".{PROJECTION_KIND}") for k in sd)
    if has_blocks and isa is None:
        raise ShardMismatch(f"the {role} shard holds the GGUF's q4_1 blocks: run the node with TWINTEE_DTYPE=q4_1")
    if isa is not None and not has_blocks:
        raise ShardMismatch(f"TWINTEE_DTYPE=q4_1 needs a release of the GGUF's blocks, this {role} shard is float32: "
                            "prepare one with `python -m release prepare --weights q4_1 --data-dir DIR`")


def build_part(role: str, spec: ModelSpec, split_layer: int, sd: dict, dtype: torch.dtype, max_positions: int,
               device: str = "cpu", isa: str | None = None) -> Part:
    """Consumes `sd` (tensors are popped as they are fused, so peak memory stays near one copy).

    The projections are placed on `device` here; the small tensors are moved by the caller. With
    `isa` (TWINTEE_DTYPE=q4_1) the shard must hold blocks, which stay blocks on that q4 kernel path.
    """
    check_format(role, sd, isa)
    expected = set(shard_keys(role, spec, split_layer, blocks=isa is not None))
    if set(sd) != expected:
        missing, extra = sorted(expected - set(sd))[:3], sorted(set(sd) - expected)[:3]
        raise ShardMismatch(f"{role} shard does not match its role: missing {missing}, unexpected {extra}")
    layers = [fuse_layer(sd, i, dtype, device, isa) for i in layer_range(role, spec, split_layer)]
    cos, sin = rope_tables(spec, max_positions, dtype)
    is_head, make = role == "node2", Projections(sd, dtype, device, isa)
    if isa is None:
        embed = None if is_head else _take(sd, "model.embed_tokens.weight", dtype)
    else:  # rows by id, dequantized exactly as the float32 table holds them
        embed = None if is_head else make.weight(["model.embed_tokens.weight"], TABLE_KIND)
    return Part(
        spec=spec,
        first_layer=0 if role == "node1" else split_layer,
        layers=layers,
        embed=embed,
        norm=_take(sd, "model.norm.weight", dtype) if is_head else None,
        head=make.weight(["lm_head.weight"], TABLE_KIND) if is_head else None,  # [V, D]
        cos=cos,
        sin=sin,
    )
