"""The release step's q4_1 shards: the GGUF's own blocks, whose every value is the float32 shard's, bit for bit."""
import pytest
import torch
from safetensors.torch import load as st_load

from release.prepare import PrepareError, prepare
from release.source import SourceError, gguf_blocks
from shared.q4.blocks import BLOCK_BYTES, dequantize

pytestmark = pytest.mark.slow  # converts SmolLM2 twice (~20 s)


@pytest.fixture(scope="module")
def shards(smollm, tmp_path_factory):
    """-> {format: {role: state dict}}: the same model released as float32 and as q4_1 (plain shards)."""
    out = {}
    for weights in ("float32", "q4_1"):
        data = tmp_path_factory.mktemp(weights)
        body = prepare("smollm2", data, loaded=smollm, weights=weights)
        out[weights] = {role: st_load((data / "model" / e["file"]).read_bytes()) for role, e in body["shards"].items()}
    return out


@pytest.mark.parametrize("role", ["node1", "node2"])
def test_every_dequantized_weight_equals_the_float32_shard_bit_for_bit(shards, role):
    plain, blocks = shards["float32"][role], shards["q4_1"][role]
    assert len(blocks) == len(plain)
    kinds = {}
    for key, value in blocks.items():
        name, _, kind = key.rpartition(".")
        if kind in BLOCK_BYTES:
            kinds[kind] = kinds.get(kind, 0) + 1
            assert value.dtype == torch.uint8
            value = dequantize(value, kind)
        else:
            name = key
        assert torch.equal(value, plain[name]), key  # bit for bit (no NaNs in these weights)
    # node1: 15 layers x 7 projections + the embedding; node2: 15 x 7 + the head
    assert kinds == {"q4_1": 105, "q8_0": 1}


def test_q4_1_shards_are_about_a_sixth_of_float32(shards):
    size = {w: sum(t.nbytes for s in shards[w].values() for t in s.values()) for w in shards}
    assert size["q4_1"] < size["float32"] / 5, size


def test_a_tampered_block_is_not_the_float32_value(shards):
    # The comparison above can fail: one flipped nibble changes exactly one weight.
    blocks = shards["q4_1"]["node1"]["model.layers.0.self_attn.q_proj.weight.q4_1"].clone()
    blocks[3, 4] ^= 0x01
    diff = dequantize(blocks, "q4_1") != shards["float32"]["node1"]["model.layers.0.self_attn.q_proj.weight"]
    assert diff.sum().item() == 1


def test_q4_1_needs_the_gguf_source(tiny_llama_dir, tmp_path):
    with pytest.raises(SourceError, match="GGUF's own blocks"):
        gguf_blocks(str(tiny_llama_dir), 4, 2)
    with pytest.raises(PrepareError, match="weights must be one of"):
        prepare("smollm2", tmp_path, weights="q3")
