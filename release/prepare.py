"""Converts a model once into node1's and node2's shards plus config and tokenizer (called by release.publish)."""
import hashlib
import time
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from tqdm import tqdm

from release.source import gguf_blocks, load_source
from shared.loading import tokenizer_digest
from shared.q4.blocks import BLOCK_BYTES
from shared.spec import ModelSpec
from attestation.evidence import NODE_ROLES
from shared.weights import shard_keys
from attestation.canonical import canonical_json


# What a shard may hold: float32 tensors, or the GGUF's own blocks (shared/q4/blocks.py).
WEIGHT_FORMATS = ("float32", "q4_1")


class PrepareError(ValueError):
    """The release step was asked for something impossible (e.g. a split point out of range)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_point(spec: ModelSpec, split: int | None) -> int:
    k = spec.num_layers // 2 if split is None else split
    if not 0 < k < spec.num_layers:
        raise PrepareError(f"split layer {k} must be between 1 and {spec.num_layers - 1}")
    return k


def role_tensors(state: dict, spec: ModelSpec, k: int, role: str, blocks: dict | None = None) -> dict[str, torch.Tensor]:
    """The role's shard: float32 tensors, or with `blocks` (release.source.gguf_blocks) the file's own
    Q4_1 / Q8_0 blocks for every tensor the shard names by a format, float32 for the rest."""
    tensors = {}
    for key in tqdm(shard_keys(role, spec, k, blocks is not None), desc=f"{role} shard", unit="tensor"):
        name, _, kind = key.rpartition(".")
        if kind not in BLOCK_BYTES:
            name, kind = key, ""
        # lm_head is tied to the embedding in SmolLM2: node2 gets its own copy, never node1's file.
        if name == "lm_head.weight" and name not in (blocks if kind else state):
            name = "model.embed_tokens.weight"
        tensors[key] = block_tensor(blocks, name, kind) if kind else state[name].to(torch.float32).contiguous().clone()
    return tensors


def block_tensor(blocks: dict, name: str, kind: str) -> torch.Tensor:
    found, rows = blocks.get(name, (None, None))
    if found != kind:
        raise PrepareError(f"{name} is stored as {found or 'no block format'} in the GGUF; a q4_1 shard needs {kind}")
    return torch.from_numpy(rows.copy())  # uint8 [out, in / 32 * block bytes]


def write_model_files(model, tokenizer, out: Path) -> tuple[dict, ModelSpec]:
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)  # the shards are plain float32, whatever the source was
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_bytes(canonical_json(cfg))
    tokenizer.save_pretrained(out / "tokenizer")
    return cfg, ModelSpec.from_config(cfg)


def prepare(source: str, data_dir: Path, split: int | None = None, version: int = 1, seal=None, loaded=None,
            weights: str = "float32") -> dict:
    """Writes data_dir/model/{config.json, tokenizer/, node{1,2} shards, manifest.json}; returns the manifest body.

    `seal(role, data: bytes, out_dir, model_id) -> dict` stores one shard (encrypting it) and returns its
    manifest entry; without it shards are written as plain safetensors (tests and dev only).
    `loaded` is an already loaded (model, tokenizer, model_id), so tests convert without reloading.
    `weights="q4_1"` keeps the GGUF's own blocks (TWINTEE_DTYPE=q4_1): projections Q4_1, embedding and head Q8_0.
    """
    if weights not in WEIGHT_FORMATS:
        raise PrepareError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
    model, tokenizer, model_id = loaded or load_source(source)
    out = data_dir / "model"
    cfg, spec = write_model_files(model, tokenizer, out)
    k = split_point(spec, split)
    state = model.state_dict()
    blocks = gguf_blocks(source, spec.heads, spec.kv_heads) if weights == "q4_1" else None
    shards = {}
    for role in NODE_ROLES:
        data = st_save(role_tensors(state, spec, k, role, blocks))
        shards[role] = seal(role, data, out, model_id) if seal else _write_plain(role, data, out)
        del data
    body = {
        "model_id": model_id, "version": version, "split_layer": k, "num_layers": spec.num_layers,
        "config_sha256": sha256(canonical_json(cfg)), "tokenizer_sha256": tokenizer_digest(out / "tokenizer"),
        "created_at": int(time.time()), "shards": shards,
    }
    return body


def _write_plain(role: str, data: bytes, out: Path) -> dict:
    name = f"{role}.safetensors"
    (out / name).write_bytes(data)
    return {"file": name, "plaintext_sha256": sha256(data), "size": len(data)}
