"""Loads one node's part of the model from the release directory, and nothing of the other node's."""
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load

from attestation.manifest import ManifestError, load_manifest, read_public_key
from shared.config import ModelSettings
from shared.memory import trim
from shared.model import Part
from shared.q4 import kernel as q4_kernel
from shared.spec import ModelSpec
from shared.weights import build_part


class ModelNotPrepared(FileNotFoundError):
    """The release step has not written this node's files yet."""


@dataclass(frozen=True)
class Release:
    """What the release step wrote: the manifest body and the model's config."""

    model_dir: Path
    manifest: dict
    config: dict

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_config(self.config)

    @property
    def split_layer(self) -> int:
        return self.manifest["split_layer"]

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    def layers_of(self, role: str) -> list[int]:
        k, n = self.split_layer, self.spec.num_layers
        return [0, k] if role == "node1" else [k, n]

    def served_by(self, role: str) -> dict:
        """What a node tells a challenger it serves, beside its evidence."""
        return {"model_id": self.model_id, "version": self.manifest.get("version"), "layers": self.layers_of(role)}


def read_release(data_dir: Path, min_version: int = 0) -> Release:
    """Reads the release, refusing a manifest not signed by the pinned owner key or older than min_version.

    The config is checked against the manifest's hash, so a host cannot swap the architecture either.
    """
    model_dir = data_dir / "model"
    try:
        owner = read_public_key(data_dir / "keys" / "owner.pub")
        manifest = load_manifest(model_dir / "manifest.json", owner, min_version=min_version)
        raw_config = (model_dir / "config.json").read_bytes()
    except FileNotFoundError:
        raise ModelNotPrepared(f"no prepared model in {model_dir}: run `make prepare`") from None
    if hashlib.sha256(raw_config).hexdigest() != manifest["config_sha256"]:
        raise ManifestError("config_mismatch", "config.json does not match the signed manifest")
    return Release(model_dir, manifest, json.loads(raw_config))


def shard_bytes(release: Release, role: str, open_shard=None) -> bytes:
    """The role's plaintext shard, in memory. `open_shard(entry, path)` decrypts an encrypted one."""
    entry = release.manifest["shards"][role]
    path = release.model_dir / entry["file"]
    if open_shard is not None:
        return open_shard(entry, path)
    return path.read_bytes()


def tokenizer_digest(folder: Path) -> str:
    """What the signed manifest pins of the tokenizer folder: names and SHA-256 of its files."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return _sha256(b"".join(p.name.encode() + b"\0" + _sha256(p.read_bytes()).encode() for p in files))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_part(release: Release, role: str, settings: ModelSettings, open_shard=None) -> tuple[Part, dict]:
    """-> (Part, load stats). Only this role's shard is read; weights are fused as they are loaded."""
    t0, rss0 = time.perf_counter(), rss_bytes()
    state = st_load(shard_bytes(release, role, open_shard))
    part = build_part(role, release.spec, release.split_layer, state, settings.torch_dtype, settings.max_positions,
                      settings.device, block_path(settings))
    if settings.device != "cpu":
        part = _to_device(part, settings.device)
    trim()  # the decrypted shard's and the unfused tensors' pages: hundreds of MB never needed again
    return part, {"load_s": round(time.perf_counter() - t0, 3), "weight_bytes": part.weight_bytes(),
                  "rss_added_bytes": rss_bytes() - rss0}


class BlocksNeedTheCpu(ValueError):
    """TWINTEE_DTYPE=q4_1 keeps the weights in GGUF blocks, which only the CPU kernel multiplies."""


def block_path(settings: ModelSettings) -> str | None:
    """The q4 kernel path a q4_1 node runs (from the CPU's flags, TWINTEE_CPU_ISA's cap included), else None."""
    if settings.dtype != "q4_1":
        return None
    if settings.device != "cpu":
        raise BlocksNeedTheCpu(f"TWINTEE_DTYPE=q4_1 runs on the CPU only, not {settings.device}")
    q4_kernel.load()  # refuses now, naming `make kernels`, rather than at the first step
    return q4_kernel.isa_for(settings.cpu.flags)


def rss_bytes() -> int:
    """This process's resident set size (Linux), to report what loading the weights costs."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _to_device(part: Part, device: str) -> Part:
    for name, value in vars(part).items():
        if isinstance(value, torch.Tensor):
            setattr(part, name, value.to(device))
    for layer in part.layers:
        for name, value in vars(layer).items():
            if isinstance(value, torch.Tensor):
                setattr(layer, name, value.to(device))
    return part
