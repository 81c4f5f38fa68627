"""Settings both nodes share, and the helpers that read them from an environment mapping.

Only entry points pass `os.environ` in; every other module receives a frozen, validated config.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from attestation.service import ConfigError
from shared.cpu import ISAS, CpuFeatures, UnsupportedCpu, library_caps, read_cpu

# The activations' dtype of each mode; q4_1 keeps the GGUF's weight blocks (shared/q4) with float32 activations.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "q4_1": torch.float32}
TEE_KINDS = ("simulated", "tdx", "sev-snp", "dstack")
PREFILL_TOKENS = 64  # steps with at least this many tokens are compute-bound enough to use more threads
# Threads of each node's one gunicorn worker (launcher/stack.py): node1 holds one per streaming generation.
GUNICORN_THREADS = 48


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default)


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    try:
        return default if raw in (None, "") else float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class ModelSettings:
    """How a node runs its part of the model (the seed's ModelSettings)."""

    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # Threads for a step of many tokens (a prefill): the nodes take turns on a prompt, so the one
    # working can use every core. 0 = all cores.
    prefill_threads: int = 0
    max_input_tokens: int = 2048
    max_new_tokens: int = 1024  # the largest `max_tokens` a request may ask for
    max_batch: int = 16  # sequences in one step across both nodes
    cpu: CpuFeatures = field(default_factory=read_cpu)  # TWINTEE_CPU_ISA=avx2: as on an AVX2-only CPU
    openmp_wait: str = ""  # OMP_WAIT_POLICY as the node started (shared/cpu.py: OPENMP_ENV); "" = libgomp's spin
    openmp_spins: str = ""  # GOMP_SPINCOUNT as the node started; "" = the policy's own count

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigError(f"TWINTEE_DTYPE must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"TWINTEE_DEVICE must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device == "cpu" and self.dtype == "float16":
            raise ConfigError("float16 needs TWINTEE_DEVICE=cuda; use float32 or bfloat16 on the CPU")
        for name in ("max_input_tokens", "max_new_tokens", "max_batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.threads < 0 or self.prefill_threads < 0:
            raise ConfigError("TWINTEE_THREADS and TWINTEE_PREFILL_THREADS must be >= 0")
        if self.device == "cpu":
            try:
                self.cpu.require(self.dtype)
            except UnsupportedCpu as exc:
                raise ConfigError(str(exc)) from None

    def use_threads_for(self, n_tokens: int, alone: bool = False) -> None:
        """Sets the calling thread's torch threads for a step: every core for a prefill-sized step
        or one that node1 found alone in flight (the nodes take turns on it), else the decode setting.

        Called on every step, in the thread that computes: OpenMP keeps the count per thread, and a
        web server's request thread starts with one per core whatever the process set at startup
        (measured: oneDNN in a fresh thread kept 1.97 cores busy after the main thread set 1).
        """
        every_core = alone or n_tokens >= PREFILL_TOKENS
        n = (self.prefill_threads or os.cpu_count() or 1) if every_core else self.threads
        if n:
            torch.set_num_threads(n)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def max_positions(self) -> int:
        return self.max_input_tokens + self.max_new_tokens

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ModelSettings":
        isa = env_str(env, "TWINTEE_CPU_ISA", "native")
        if isa not in ISAS:
            raise ConfigError(f"TWINTEE_CPU_ISA must be one of {ISAS}, got {isa!r}")
        missing = [f"{k}={v}" for k, v in library_caps(isa).items() if env.get(k) != v]
        if missing:
            # The libraries read these when they load, before this code runs: too late to set here.
            raise ConfigError(f"TWINTEE_CPU_ISA={isa} needs {' '.join(missing)} in the environment the node starts with")
        return cls(
            cpu=read_cpu(isa),
            device=env_str(env, "TWINTEE_DEVICE", "cpu"),
            dtype=env_str(env, "TWINTEE_DTYPE", "float32"),
            threads=env_int(env, "TWINTEE_THREADS", 0),
            prefill_threads=env_int(env, "TWINTEE_PREFILL_THREADS", 0),
            max_input_tokens=env_int(env, "TWINTEE_MAX_INPUT_TOKENS", 2048),
            max_new_tokens=env_int(env, "TWINTEE_MAX_NEW_TOKENS", 1024),
            max_batch=env_int(env, "TWINTEE_MAX_BATCH", 16),
            openmp_wait=env_str(env, "OMP_WAIT_POLICY", ""),
            openmp_spins=env_str(env, "GOMP_SPINCOUNT", ""),
        )


@dataclass(frozen=True)
class TeeSettings:
    """Which attestation provider a node uses and where the release's reference values live."""

    kind: str = "simulated"
    data_dir: Path = Path("data")
    broker_url: str = "http://127.0.0.1:5003"
    project_root: Path = Path(__file__).resolve().parents[1]
    rekey_frames: int = 100_000
    rekey_seconds: float = 3600.0

    def __post_init__(self):
        if self.kind not in TEE_KINDS:
            raise ConfigError(f"TWINTEE_TEE must be one of {TEE_KINDS}, got {self.kind!r}")
        if self.rekey_frames <= 0 or self.rekey_seconds <= 0:
            raise ConfigError("TWINTEE_REKEY_FRAMES and TWINTEE_REKEY_SECONDS must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "TeeSettings":
        return cls(
            kind=env_str(env, "TWINTEE_TEE", "simulated"),
            data_dir=Path(env_str(env, "TWINTEE_DATA_DIR", "data")).resolve(),
            broker_url=env_str(env, "TWINTEE_BROKER_URL", "http://127.0.0.1:5003"),
            rekey_frames=env_int(env, "TWINTEE_REKEY_FRAMES", 100_000),
            rekey_seconds=env_float(env, "TWINTEE_REKEY_SECONDS", 3600.0),
        )
