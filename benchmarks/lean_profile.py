"""Where a step's time goes on the nodes' lean path (`shared.model.run_layers`), profiled in this process.

The nodes' own parts are rebuilt here from the unsplit model's weights, so the profile runs the
exact code the nodes run, with the nodes' thread count, without HTTP or sealing in the way.
"""
import os
import time
from contextlib import contextmanager
from statistics import median

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.link_profile import frame_ms
from shared import model as lean
from shared.kv import SessionCache
from shared.spec import ModelSpec
from attestation.evidence import NODE_ROLES
from shared.weights import build_part, shard_keys

# The projections run as oneDNN linears (shared.linear), or with TWINTEE_DTYPE=q4_1 as the q4 kernel's
# ops (a decode step's layers are one twintee_q4::decode_layers call, mostly its projections, counted
# whole); bmm is a new token's attention.
MATMUL_OPS = {"mkldnn::_linear_pointwise", "twintee_q4::mm", "twintee_q4::prompt_mm", "twintee_q4::decode_layers",
              "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}
CONTEXT = 64  # cached positions behind each decode step: a short chat turn


@contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def build_parts(model, split: int, dtype: torch.dtype) -> dict[str, lean.Part]:
    spec = ModelSpec.from_config(model.config.to_dict())
    state = model.state_dict()
    parts = {}
    for role in NODE_ROLES:
        # lm_head is tied to the embedding: node2 holds its own copy, as the release step gives it.
        sd = {k: state[k if k in state else "model.embed_tokens.weight"].clone() for k in shard_keys(role, spec, split)}
        parts[role] = build_part(role, spec, split, sd, dtype, max_positions=2048)
    return parts


def new_seqs(part: lean.Part, batch: int, pos: int, n: int) -> list[lean.Seq]:
    seqs = []
    for _ in range(batch):
        cache = SessionCache(part.spec, len(part.layers), 2048, part.dtype)
        cache.length = pos  # zeros stand in for a real prefix: attention costs the same
        seqs.append(lean.Seq(cache, pos, n))
    return seqs


def step_once(parts, seqs1, seqs2) -> tuple[float, float, float]:
    """One step through both nodes' code -> (node1 s, node2 layers s, node2 head s); advances the sequences."""
    ids = torch.zeros(sum(s.n for s in seqs1), dtype=torch.long)
    t0 = time.perf_counter()
    hidden = lean.run_layers(parts["node1"], lean.embed(parts["node1"], ids), seqs1)
    t1 = time.perf_counter()
    y = lean.run_layers(parts["node2"], hidden, seqs2)
    t2 = time.perf_counter()
    lean.logits(parts["node2"], y[-len(seqs2):])
    t3 = time.perf_counter()
    for s in seqs1 + seqs2:
        s.pos, s.n = s.pos + s.n, 1
    return t1 - t0, t2 - t1, t3 - t2


def step_ms(parts, batch: int, n_threads: int, reps: int = 12, prompt: int = 0) -> dict:
    """Median ms of a decode step (or, with `prompt`, of one prefill) per node at a batch size."""
    with threads(n_threads):
        times = []
        for _ in range(2):  # warm-up, then measure
            seqs1 = new_seqs(parts["node1"], batch, 0 if prompt else CONTEXT, prompt or 1)
            seqs2 = new_seqs(parts["node2"], batch, 0 if prompt else CONTEXT, prompt or 1)
            times = [step_once(parts, seqs1, seqs2) for _ in range(1 if prompt else reps)]
    n1, layers2, head = (median(t[i] for t in times) * 1e3 for i in range(3))
    return {"batch": batch, "threads": n_threads, "node1_ms": n1, "node2_ms": layers2 + head, "head_ms": head,
            "total_ms": n1 + layers2 + head}


def node_step(parts, role: str, seqs: list[lean.Seq]) -> None:
    """One node's whole decode step at batch 1: node1 embeds and runs its layers; node2 adds norm and head."""
    part = parts[role]
    if role == "node1":
        lean.run_layers(part, lean.embed(part, torch.zeros(1, dtype=torch.long)), seqs)
    else:
        lean.logits(part, lean.run_layers(part, torch.zeros(1, part.spec.hidden, dtype=part.dtype), seqs))
    seqs[0].pos += 1


def op_profile(parts, role: str, n_threads: int, steps: int = 8) -> dict:
    """torch.profiler over one node's decode steps at batch 1 -> its top ops by self time."""
    seqs = new_seqs(parts[role], 1, CONTEXT, 1)
    with threads(n_threads):
        node_step(parts, role, seqs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                node_step(parts, role, seqs)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {
        "role": role, "threads": n_threads, "step_ms": total / steps / 1e3,
        "matmul_share": sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / total,
        "top": [{"op": e.key, "ms_per_step": e.self_cpu_time_total / steps / 1e3, "share": e.self_cpu_time_total / total,
                 "calls_per_step": e.count / steps} for e in top],
    }


def read_bandwidth_gbs(n_threads: int, mb: int = 256) -> float:
    """Memory read bandwidth with the nodes' thread count: a decode step must stream every weight once."""
    data = torch.ones(mb * 2**20 // 4, dtype=torch.float32)
    with threads(n_threads):
        data.sum()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            data.sum()
            times.append(time.perf_counter() - t0)
    return data.numel() * 4 / min(times) / 1e9


@torch.inference_mode()
def batch_drift(parts, batch: int = 8, prompt: int = 1) -> float:
    """Max |difference| of one sequence's logits computed alone vs inside a batch of `batch` sequences.

    With one token per sequence, as in a decode step. shared.linear keeps a row's summation order
    the same in any batch and attention runs per sequence, so this should read 0.0: batching
    cannot change a stream's tokens. Anything else could flip a near-tied greedy pick.
    """
    ids = torch.randint(0, parts["node1"].spec.vocab, (batch, prompt), generator=torch.Generator().manual_seed(0))

    def first_logits(rows: int) -> torch.Tensor:
        seqs1 = new_seqs(parts["node1"], rows, 0, prompt)
        seqs2 = new_seqs(parts["node2"], rows, 0, prompt)
        hidden = lean.run_layers(parts["node1"], lean.embed(parts["node1"], ids[:rows].reshape(-1)), seqs1)
        y = lean.run_layers(parts["node2"], hidden, seqs2)
        return lean.logits(parts["node2"], y[prompt - 1 : prompt])  # [1, V]: sequence 0's last position

    return (first_logits(1) - first_logits(batch)).abs().max().item()


def embed_bytes(part: lean.Part) -> int:
    return part.embed.numel() * part.embed.element_size() if part.embed is not None else 0


def lean_profile(model, split: int, dtype: torch.dtype, node_threads: int, prompt_tokens: int) -> dict:
    """Decode steps at batch 1/8/16, a prefill, op profiles and the bandwidth floor, all on the lean path."""
    parts = build_parts(model, split, dtype)
    n = node_threads or torch.get_num_threads()  # 0 = torch's default, as the nodes read it
    out = {
        "decode": [step_ms(parts, b, n) for b in (1, 8, 16)] + [step_ms(parts, 1, torch.get_num_threads())],
        "prefill": [step_ms(parts, 1, t, prompt=prompt_tokens) for t in sorted({n, torch.get_num_threads()})],
        "ops": [op_profile(parts, role, n) for role in NODE_ROLES],
        "bandwidth_gbs": read_bandwidth_gbs(n),
        # generate() and a step alone in flight use every core: what bounds a single stream.
        "bandwidth_all_gbs": read_bandwidth_gbs(os.cpu_count() or 1),
        "weight_bytes": {role: p.weight_bytes() for role, p in parts.items()},
        # A decode step reads every weight but the embedding table, of which it needs one row per token.
        "step_weight_bytes": sum(p.weight_bytes() for p in parts.values()) - embed_bytes(parts["node1"]),
        "frames": [frame_ms(parts["node1"].spec.hidden, dtype, b) for b in (1, 8)],
        "batch_drift": batch_drift(parts),
    }
    del parts
    return out
