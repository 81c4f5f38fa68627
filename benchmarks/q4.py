"""The q4_1 section of `make bench` (issue 17): its release, its in-process profile, the kernel against
the float32 oneDNN path per SmolLM2 shape, and llama.cpp on the same GGUF when llama-cpp-python is installed.

    python -m benchmarks.bench --dtypes q4_1 --quick    # this section alone (a few minutes)
"""
import importlib.util
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import benchmarks.lean_profile as lean_profile_module
from attestation.evidence import NODE_ROLES
from benchmarks.prompts import DECODE, chat_ids
from release.bless import bless
from release.prepare import role_tensors
from release.publish import publish
from release.source import DEFAULT_SOURCE, SMOLLM2_GGUF, gguf_blocks, smollm2_dir
from shared.linear import Weight, linear
from shared.q4 import kernel
from shared.q4.blocks import BLOCK_BYTES
from shared.spec import ModelSpec
from shared.weights import build_part, shard_keys

ROOT = Path(__file__).resolve().parents[1]
Q4_RELEASE = ROOT / "benchmarks" / "out" / "release-q4"
# SmolLM2's projections as the nodes fuse them, and the head: (name, out, in, block format).
SHAPES = [("qkv", 960, 576, "q4_1"), ("o", 576, 576, "q4_1"), ("gate|up", 3072, 576, "q4_1"),
          ("down", 576, 1536, "q4_1"), ("head", 49152, 576, "q8_0")]


def release_dir(loaded) -> Path:
    """The bench's own q4_1 release (the GGUF's blocks), made once and re-blessed for this checkout."""
    if (Q4_RELEASE / "model" / "manifest.json").exists():
        bless(Path(__file__).resolve().parents[1], Q4_RELEASE)
    else:
        publish(DEFAULT_SOURCE, Q4_RELEASE, loaded=loaded, weights="q4_1")
    return Q4_RELEASE


def q4_parts(isa: str):
    """A stand-in for lean_profile.build_parts that builds the nodes' q4_1 parts, as they load them."""
    def build(model, split: int, dtype: torch.dtype) -> dict:
        spec = ModelSpec.from_config(model.config.to_dict())
        blocks, state = gguf_blocks(DEFAULT_SOURCE, spec.heads, spec.kv_heads), model.state_dict()
        return {role: build_part(role, spec, split, role_tensors(state, spec, split, role, blocks), dtype, 2048,
                                 isa=isa) for role in NODE_ROLES}
    return build


@contextmanager
def profiling_q4(isa: str):
    """lean_profile rebuilds the nodes' parts from the float32 model; for this section it builds q4_1 ones."""
    original = lean_profile_module.build_parts
    lean_profile_module.build_parts = q4_parts(isa)
    try:
        yield
    finally:
        lean_profile_module.build_parts = original


def whole_bytes() -> int:
    """The whole model as the GGUF stores it (tied embedding once): the q4_1 section's 'whole'."""
    import gguf

    return sum(int(t.n_bytes) for t in gguf.GGUFReader(smollm2_dir() / SMOLLM2_GGUF).tensors)


def float32_node_bytes(model, split: int, role: str) -> int:
    spec, state = ModelSpec.from_config(model.config.to_dict()), model.state_dict()
    return sum(state[k if k in state else "model.embed_tokens.weight"].numel() * 4 for k in shard_keys(role, spec, split))


def rebase_memory(mem: dict, model, split: int) -> dict:
    """memory() counts shares of float32's whole: here shares of the GGUF's whole, and each node's
    weights against its float32 weights (the issue's 'about a fifth')."""
    whole = whole_bytes()
    out = {**mem, "whole_bytes": whole}
    for role in NODE_ROLES:
        r = mem[role]
        out[role] = {**r, "weight_share": r["weight_bytes"] / whole, "rss_added_share": r["rss_added_bytes"] / whole,
                     "of_float32": r["weight_bytes"] / float32_node_bytes(model, split, role)}
    return out


def random_blocks(m: int, k: int, kind: str) -> torch.Tensor:
    """Made-up blocks with normal float16 scales (timing does not depend on the codes)."""
    b = torch.randint(0, 256, (m, k // 32, BLOCK_BYTES[kind]), dtype=torch.uint8)
    b[..., 0:4] = torch.tensor([0.01, -0.05]).half().view(torch.uint8)
    return b.reshape(m, -1).contiguous()


def _ms(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best * 1e3


def kernel_table(isa: str, threads: int) -> list[dict]:
    """Per shape and batch (1, 4, 8): ms of today's float32 oneDNN path and of the q4 kernel, best of 3."""
    old, rows = torch.get_num_threads(), []
    torch.set_num_threads(threads)
    try:
        for name, m, k, kind in SHAPES:
            f32, blocks = Weight(torch.randn(m, k), "cpu"), random_blocks(m, k, kind)
            for n in (1, 4, 8):
                x, reps = torch.randn(n, k), 10 if name == "head" else 100
                rows.append({"shape": f"{name} {m}x{k}", "batch": n, "float32_ms": _ms(lambda: linear(x, f32), reps),
                             "q4_ms": _ms(lambda: kernel.mm(x, blocks, kind, isa), reps), "q4_bytes": blocks.nbytes})
    finally:
        torch.set_num_threads(old)
    return rows


def llama_cpp(tokenizer, threads: int, tokens: int = 128) -> list[dict] | None:
    """llama.cpp's single stream on the same GGUF and prompt, on 1 and up to `threads` threads, each in a child
    process (benchmarks/llama_cpp_stream.py), if llama-cpp-python is installed (`make llama-cpp`); None otherwise.
    A run that fails is reported with its exit status instead of a rate."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    ids = ",".join(str(i) for i in chat_ids(tokenizer, DECODE))
    out = []
    for n in sorted({1, threads}):
        run = subprocess.run([sys.executable, "-m", "benchmarks.llama_cpp_stream", "--threads", str(n),
                              "--tokens", str(tokens), "--ids", ids], cwd=ROOT, capture_output=True, text=True, check=False)
        lines = run.stdout.strip().splitlines()
        out.append(json.loads(lines[-1]) if run.returncode == 0 and lines
                   else {"threads": n, "tokens": tokens, "tps": None, "error": f"exit status {run.returncode}"})
    return out


def markdown(section: dict) -> list[str]:
    """The q4_1 section's own figures: memory against float32, the kernel per shape, llama.cpp."""
    k, mem, d = section["kernels"], section["memory"], section["decode"]
    lines = [f"### q4_1: the GGUF's own blocks (q4 kernel path `{k['isa']}`, {k['threads']} thread(s))", "",
             "Weights each node holds against its float32 weights: " + ", ".join(
                 f"{r} {mem[r]['weight_bytes'] / 2**20:.1f} MiB = {mem[r]['of_float32']:.1%}" for r in NODE_ROLES) + ".",
             "", "| shape | batch | float32 oneDNN ms | q4 kernel ms | speed-up | q4 GB/s |", "| --- | --- | --- | --- | --- | --- |"]
    for r in k["rows"]:
        lines.append(f"| {r['shape']} | {r['batch']} | {r['float32_ms']:.3f} | {r['q4_ms']:.3f} | "
                     f"{r['float32_ms'] / r['q4_ms']:.2f}x | {r['q4_bytes'] / r['q4_ms'] / 1e6:.1f} |")
    runs = section.get("llama_cpp")
    llama = ("; llama.cpp not measured (llama-cpp-python not installed: `make llama-cpp`)" if runs is None else
             "; llama.cpp on the same GGUF and prompt: " + ", ".join(
                 f"{r['tps']:.1f} tok/s on {r['threads']} thread(s) (split = {d['split_tps'] / r['tps']:.2f}x)"
                 if r["tps"] else f"{r['threads']} thread(s) failed ({r['error']})" for r in runs))
    lines += ["", f"Single stream: split {d['split_tps']:.1f} tok/s, generate() {d['baseline_tps']:.1f} tok/s" + llama + "."]
    return lines


def add_to_report(path: Path, results: dict) -> None:
    """Puts the q4_1 block at the end of this CPU kind's section of RESULTS.md (report.py wrote the rest)."""
    from benchmarks.report import cpu_kind

    end = f"<!-- /cpu-kind:{cpu_kind(results['machine'])[0]} -->"
    text = path.read_text()
    path.write_text(text.replace(end, "\n".join(markdown(results["sections"]["q4_1"])) + "\n" + end, 1))
