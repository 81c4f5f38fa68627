"""Every measurement for one dtype: the unsplit baseline and the split stack, side by side in one run."""
import time
from dataclasses import asdict
from pathlib import Path

import requests

from shared.config import DTYPES

from benchmarks.baseline import Baseline, in_dtype
from benchmarks.latency import decode, ttft
from benchmarks.lean_profile import lean_profile
from benchmarks.memory import memory
from benchmarks.noise import Monitor
from benchmarks.stack import running_stack
from benchmarks.throughput import levels


def run_dtype(loaded, data_dir: Path, split: int, dtype_name: str, plan, node_threads: int, log_dir: Path) -> dict:
    """Baseline and split measurements alternate, so background load drifts into both alike."""
    model, tokenizer, _ = loaded
    dtype = DTYPES[dtype_name]
    base = Baseline(in_dtype(model, dtype), tokenizer)  # the baseline runs in the nodes' dtype
    out = {"dtype": dtype_name, "plan": asdict(plan), "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    monitor = Monitor().start()
    with running_stack(data_dir, log_dir / dtype_name, dtype_name, node_threads) as stack:
        with monitor.phase("TTFT"):
            out["ttft"] = ttft(base, stack, plan)
        with monitor.phase("decode"):
            out["decode"] = decode(base, stack, plan)
        with monitor.phase("concurrency"):
            out["concurrency"] = levels(base, stack, plan)
        out["memory"] = memory(stack, model, dtype)  # after the runs: steady state, caches freed
        out["compute"] = requests.get(stack.url("node2") + "/health", timeout=10).json().get("compute")
    print("profiling the lean path in-process ...", flush=True)
    with monitor.phase("profile"):
        out["profile"] = lean_profile(model, split, dtype, node_threads, out["ttft"]["long"]["prompt_tokens"])
    monitor.stop()
    out["noise"] = monitor.summary()
    return out
