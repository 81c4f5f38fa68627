"""What the benchmark ran on: cores, CPU model and vector flags, memory, torch and its threads."""
import os
import platform
import subprocess

import psutil
import torch

from shared.config import ModelSettings

INTERESTING_FLAGS = ("avx2", "fma", "avx512", "amx")


def cpu_info() -> tuple[str, list[str]]:
    """-> (model name, the vector-extension flags that decide which matmul kernels torch can use)."""
    model, flags = platform.processor() or "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    return model, sorted(f for f in flags if f.startswith(INTERESTING_FLAGS))


# What the bench itself writes: a run of one CPU kind right after another's is not "uncommitted changes".
BENCH_OUTPUTS = (":(exclude)benchmarks/RESULTS.md", ":(exclude)benchmarks/results-*.png", ":(exclude)benchmarks/runs")


def git_revision(root) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *BENCH_OUTPUTS],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev}{' + uncommitted changes' if dirty else ''}" if rev else "unknown"


def describe(root, node_threads: int) -> dict:
    model, flags = cpu_info()
    cpu = ModelSettings.from_env(os.environ).cpu  # after TWINTEE_CPU_ISA's cap, as the nodes see it
    return {
        "isa": cpu.isa,
        "capped_to": cpu.capped_to,
        "node_flags": sorted(cpu.flags),
        "cores": os.cpu_count(),
        "cpu": model,
        "flags": flags,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "baseline_threads": torch.get_num_threads(),
        "node_threads": node_threads,
        "python": platform.python_version(),
        "revision": git_revision(root),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
