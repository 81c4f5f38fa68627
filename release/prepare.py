"""Converts a model once into node1's and node2's shards plus config and tokenizer (called by release.publish)."""
import hashlib
import time
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from tqdm import tqdm

from release.source import load_source
from shared.loading import tokenizer_digest
from shared.spec import ModelSpec
from attestation.evidence import NODE_ROLES
from shared.weights import shard_keys
from attestation.canonical import canonical_json


class PrepareError(ValueError):
    """The release step was asked for something impossible (e.g. a split point out of range)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_point(spec: ModelSpec, split: int | None) -> int:
    k = spec.num_layers // 2 if split is None else split
    if not 0 < k < spec.num_layers:
        raise PrepareError(f"split layer {k} must be between 1 and {spec.num_layers - 1}")
    return k


def role_tensors(state: dict, spec: ModelSpec, k: int, role: str) -> dict[str, torch.Tensor]:
    tensors = {}
    for key in tqdm(shard_keys(role, spec, k), desc=f"{role} shard", unit="tensor"):
        # lm_head is tied to the embedding in SmolLM2: node2 gets its own copy, never node1's file.
        src = key if key in state or key != "lm_head.weight" else "model.embed_tokens.weight"
        tensors[key] = state[src].to(torch.float32).contiguous().clone()
    return tensors


def write_model_files(model, tokenizer, out: Path) -> tuple[dict, ModelSpec]:
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)  # the shards are plain float32, whatever the source was
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_bytes(canonical_json(cfg))
    tokenizer.save_pretrained(out / "tokenizer")
    return cfg, ModelSpec.from_config(cfg)


def prepare(source: str, data_dir: Path, split: int | None = None, version: int = 1, seal=None, loaded=None) -> dict:
    """Writes data_dir/model/{config.json, tokenizer/, node{1,2} shards, manifest.json}; returns the manifest body.

    `seal(role, data: bytes, out_dir, model_id) -> dict` stores one shard (encrypting it) and returns its
    manifest entry; without it shards are written as plain safetensors (tests and dev only).
    `loaded` is an already loaded (model, tokenizer, model_id), so tests convert without reloading.
    """
    model, tokenizer, model_id = loaded or load_source(source)
    out = data_dir / "model"
    cfg, spec = write_model_files(model, tokenizer, out)
    k = split_point(spec, split)
    state = model.state_dict()
    shards = {}
    for role in NODE_ROLES:
        data = st_save(role_tensors(state, spec, k, role))
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
