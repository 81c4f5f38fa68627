"""The release step on a local Hugging Face Llama directory: shards hold only their role's tensors,
are encrypted, and a node's lean path over them equals transformers' generate() on the source."""
import json

import pytest
import torch
from safetensors.torch import load as st_load
from transformers import AutoModelForCausalLM, AutoTokenizer

from broker.kms import derive_shard_key, load_master_key
from shared import model as M
from shared.config import ModelSettings
from shared.kv import SessionCache
from shared.loading import load_part, read_release
from release.prepare import PrepareError, split_point
from release.publish import publish
from shared.shard_crypto import decrypt_to_memory
from release.source import smollm2_dir, SMOLLM2_GGUF
from shared.spec import ModelSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_release(tiny_llama_dir, tmp_path_factory):
    # The tiny model borrows SmolLM2's tokenizer: prepare needs one, and the vocabularies match.
    AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF).save_pretrained(tiny_llama_dir)
    data = tmp_path_factory.mktemp("tiny-release")
    publish(str(tiny_llama_dir), data, split=1)
    return data


def opener(data, role):
    """Opens a shard with the release step's own master key (what the broker would release)."""
    master = load_master_key(path=data / "keys" / "master.key")
    rel = read_release(data)

    def open_shard(entry, path):
        key = derive_shard_key(master, rel.model_id, rel.manifest["version"], role)
        return decrypt_to_memory(path, key, key_id=entry["key_id"], plaintext_sha256=entry["plaintext_sha256"])

    return open_shard


def shard_of(data, role) -> dict:
    rel = read_release(data)
    entry = rel.manifest["shards"][role]
    return st_load(opener(data, role)(entry, rel.model_dir / entry["file"]))


def test_shards_hold_exactly_their_roles_tensors(tiny_release):
    rel = read_release(tiny_release)
    assert rel.split_layer == 1 and rel.spec.num_layers == 4
    node1, node2 = shard_of(tiny_release, "node1"), shard_of(tiny_release, "node2")
    assert {k.split(".")[2] for k in node1 if k.startswith("model.layers.")} == {"0"}
    assert {k.split(".")[2] for k in node2 if k.startswith("model.layers.")} == {"1", "2", "3"}
    assert "model.embed_tokens.weight" in node1 and "lm_head.weight" not in node1 and "model.norm.weight" not in node1
    assert "lm_head.weight" in node2 and "model.embed_tokens.weight" not in node2


def test_lean_path_over_prepared_shards_equals_transformers(tiny_llama_dir, tiny_release):
    ref_model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    rel = read_release(tiny_release)
    settings = ModelSettings(max_input_tokens=64, max_new_tokens=64)
    parts = [load_part(rel, role, settings, opener(tiny_release, role))[0] for role in ("node1", "node2")]
    ids = [1, 400, 401, 402, 403, 404]
    with torch.inference_mode():
        ref = ref_model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)[0, len(ids):].tolist()
    caches = [SessionCache(p.spec, len(p.layers), 64, torch.float32) for p in parts]
    out, new, pos = [], ids, 0
    for _ in range(12):
        h = M.run_layers(parts[0], M.embed(parts[0], torch.tensor(new)), [M.Seq(caches[0], pos, len(new))])
        y = M.run_layers(parts[1], h, [M.Seq(caches[1], pos, len(new))])
        out.append(int(M.logits(parts[1], y[-1:]).argmax()))
        pos, new = pos + len(new), [out[-1]]
    assert out == ref


def test_no_plaintext_weights_on_disk_after_release(tiny_release, tiny_llama_dir):
    """Compare every file under the release directory against the plaintext tensors' bytes."""
    from safetensors.torch import load_file

    tensors = load_file(tiny_llama_dir / "model.safetensors")
    needles = [t.contiguous().numpy().tobytes()[:64] for name, t in tensors.items() if t.numel() >= 64 and "norm" not in name]
    for f in tiny_release.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert not any(n in blob for n in needles), f"plaintext weights found in {f}"


def test_split_point_is_validated():
    spec = ModelSpec.from_config(json.loads('{"model_type":"llama","num_hidden_layers":4,"hidden_size":8,'
                                            '"num_attention_heads":2,"intermediate_size":8,"vocab_size":10,"rms_norm_eps":1e-5}'))
    assert split_point(spec, None) == 2
    for bad in (0, 4, 9):
        with pytest.raises(PrepareError, match="between 1 and 3"):
            split_point(spec, bad)
