"""What the CPU a node runs on can do: its vector extensions, and whether a dtype has kernels there.

Machines differ (AVX-512 Xeons and EPYCs, AVX2-only EPYCs), and the one running the suite or a
node is not always the one the code was tuned on. `TWINTEE_CPU_ISA=avx2` makes a node (and the
tests) take the paths an AVX2-only CPU takes. The math libraries read their own caps
(`ONEDNN_MAX_CPU_ISA`, `MKL_ENABLE_INSTRUCTIONS`, `ATEN_CPU_CAPABILITY`) when they load, before any of our code runs, so
those must be in the process's environment too (`library_caps`; the launcher and the tests set
them), while PyTorch's own bfloat16 check reads the CPU directly, which only this setting hides.
"""
from dataclasses import dataclass
from pathlib import Path

ISAS = ("native", "avx2")
# The flags that decide which matmul kernels exist: x86 vector extensions and the AMX tiles.
VECTOR_PREFIXES = ("sse4", "avx", "fma", "f16c", "amx")
# What an AVX2-only EPYC reports (the machine in issue 10): no avx512*, no AMX, no avx_ne_convert.
AVX2_ONLY = frozenset({"sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c"})
# oneDNN's bfloat16 GEMM (and torch's check before it) needs these three together, or the newer
# AVX2 conversion instructions (torch: "bf16 path needs the cpu support avx_ne_convert or
# avx512bw, avx512vl and avx512dq").
BF16_NEEDS = ({"avx512bw", "avx512vl", "avx512dq"}, {"avx_ne_convert"})


class UnsupportedCpu(ValueError):
    """The configured dtype has no kernels on this CPU; the message names what is missing and what to use."""


def library_caps(isa: str) -> dict[str, str]:
    """The environment the math libraries need to behave as on `isa` (empty for the native CPU)."""
    # ATen's own vectorized kernels (softmax, norms, element-wise) dispatch on ATEN_CPU_CAPABILITY.
    return ({"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
            if isa == "avx2" else {})


# How the nodes' OpenMP threads wait between parallel regions; libgomp reads it when torch loads, so it
# must be in the environment the node starts with (the launcher and the images set it). By default an
# idle OpenMP thread spins for a while before it sleeps. A node's step runs ~150 parallel regions with
# Python between them, so with two threads the second spun through the whole step, and on a machine
# whose other core was busy it took the core from its own master thread: node1's q4 decode step went
# from 12 ms to 250 ms (issue 17, both threads burning 95 ms of CPU a step). Passive threads sleep at
# once; a region then costs a wake-up, which the kernels only pay for work worth sharing.
# GOMP_SPINCOUNT (which libgomp lets override the policy's count) gives them a short spin first: a prefill's
# regions follow each other with only Python between, and a region that finds its threads awake skips
# the wake-up. 4000 pauses is ~40 us here (a pause is 10-40 ns as CPUs go), far short of a turn of the
# other node. Measured on the q4_1 stack, AVX2 caps: long-prompt TTFT 715 -> 665 ms, in-process prefill
# of node1's layers 360 -> 313 ms; decode unchanged within the noise (8 clients 237 -> 254 tok/s).
OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "4000"}


@dataclass(frozen=True)
class CpuFeatures:
    flags: frozenset[str]  # vector flags only, after the cap
    capped_to: str = "native"

    @property
    def isa(self) -> str:
        """The widest vector ISA: "avx512", "avx2" or "baseline" (what the kernels dispatch on)."""
        if "avx512f" in self.flags:
            return "avx512"
        return "avx2" if {"avx2", "fma"} <= self.flags else "baseline"

    @property
    def bf16_kernels(self) -> bool:
        return any(needs <= self.flags for needs in BF16_NEEDS)

    def require(self, dtype: str) -> None:
        """Refuses, in one line, a dtype this CPU has no kernels for."""
        if dtype == "bfloat16" and not self.bf16_kernels:
            have = " ".join(sorted(f for f in self.flags if f.startswith(("avx", "fma")))) or "no AVX"
            capped = " (capped by TWINTEE_CPU_ISA=avx2)" if self.capped_to != "native" else ""
            raise UnsupportedCpu(
                "TWINTEE_DTYPE=bfloat16 needs oneDNN's bfloat16 kernels, which need the CPU flags "
                f"avx512bw+avx512vl+avx512dq or avx_ne_convert; this CPU has {have}{capped}: "
                "use TWINTEE_DTYPE=float32")

    def describe(self) -> dict:
        return {"isa": self.isa, "flags": sorted(self.flags), "capped_to": self.capped_to,
                "bf16_kernels": self.bf16_kernels}


def vector_flags(cpuinfo: str) -> frozenset[str]:
    """The vector flags of the first processor listed in /proc/cpuinfo's text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(f for f in value.split() if f.startswith(VECTOR_PREFIXES))
    return frozenset()


def read_cpu(isa: str = "native", cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    if isa not in ISAS:
        raise ValueError(f"TWINTEE_CPU_ISA must be one of {ISAS}, got {isa!r}")
    try:
        flags = vector_flags(cpuinfo.read_text())
    except OSError:  # not Linux: nothing known, so nothing optional is assumed
        flags = frozenset()
    return CpuFeatures(flags & AVX2_ONLY if isa == "avx2" else flags, isa)
