"""node1's one validated configuration, read from the environment by its entry point."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from shared.config import GUNICORN_THREADS, ConfigError, ModelSettings, TeeSettings, env_float, env_int, env_str

CONTROL_THREADS = 16  # gunicorn threads kept free of generations for /health, /metrics, /attestation


def default_pipeline_slots(dtype: str) -> int:
    """Micro-batches in flight to node2 unless TWINTEE_PIPELINE_SLOTS says otherwise.

    Two let both nodes compute at once, each on its own cores. float32 and bfloat16 gain from that
    even on one 2-core machine: their one-row steps are memory-bound and barely faster on a second
    thread (8 clients: 95.7 tok/s with two slots, 64.7 with one). The q4_1 kernel's steps are
    compute-bound and use both cores well. It also shares each block's dequantization between rows
    only from 4 rows up, so halving a batch nearly doubles its cost: 4 clients on one 2-core machine
    got 113.7 tok/s as two batches of 2 and 199.7 as one batch of 4, on the AVX2 imitation.
    Nodes on machines of their own may still gain from two slots with q4_1: set it there.
    """
    return 1 if dtype == "q4_1" else 2


@dataclass(frozen=True)
class Node1Config:
    host: str = "127.0.0.1"
    port: int = 5002
    node2_url: str = "http://127.0.0.1:5001"
    # node2's step socket (node2/step_socket.py): tcp://host:port, or "" for steps over HTTP only.
    # Defaults to node2's host at TWINTEE_NODE2_STEP_PORT; a host in the middle may sit on either.
    node2_step_url: str = "tcp://127.0.0.1:5004"
    model: ModelSettings = field(default_factory=ModelSettings)
    tee: TeeSettings = field(default_factory=TeeSettings)
    max_body_bytes: int = 1 << 20
    pipeline_slots: int = 2  # micro-batches in flight between node1 and node2 (default_pipeline_slots)
    # Generations at once; a streaming one holds one of gunicorn's GUNICORN_THREADS threads, so this
    # leaves 16 for /health, /metrics and /attestation under any load (issue 12: 32 long generations
    # starved them). 32 because issue 13's load test runs 32 concurrent clients with zero 5xx.
    max_concurrent: int = 32
    # How long a batch waits for node2 to come back (a restarted node2 loads in ~10 s) before its
    # generations fail; within it, each is replayed into the new node2 and goes on unchanged.
    node2_recovery_s: float = 60.0
    # On a graceful stop, how long generations in flight may go on before each ends with a clean error
    # (the launcher gives gunicorn and nginx this plus a margin, so nothing is SIGKILLed).
    shutdown_deadline_s: float = 20.0
    # Signed records of recent completions kept for GET /v1/signature/{id}: hashes only, about 600
    # bytes each in memory (measured), so the default costs about 6 MB; older ones answer 404.
    signature_records: int = 10000
    # Where tenants and the usage ledger live: empty = SQLite under the data directory; a
    # postgresql:// URL lets several node1 replicas share them.
    ledger_url: str = ""

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError("TWINTEE_NODE1_PORT must be a TCP port")
        if not self.node2_url.startswith(("http://", "https://")):
            raise ConfigError("TWINTEE_NODE2_URL must be an http(s) URL")
        if self.node2_step_url and step_address(self.node2_step_url) is None:
            raise ConfigError("TWINTEE_NODE2_STEP_URL must be empty (steps over HTTP) or tcp://host:port")
        if not 1 <= self.pipeline_slots <= 4:
            raise ConfigError("TWINTEE_PIPELINE_SLOTS must be 1 to 4")
        if self.max_body_bytes < 1024:
            raise ConfigError("TWINTEE_MAX_BODY_BYTES must be at least 1024")
        if not 1 <= self.max_concurrent <= GUNICORN_THREADS - CONTROL_THREADS:
            raise ConfigError(f"TWINTEE_MAX_CONCURRENT must be 1 to {GUNICORN_THREADS - CONTROL_THREADS} (gunicorn's "
                              f"{GUNICORN_THREADS} threads minus {CONTROL_THREADS} for the control plane)")

        if not 0 <= self.shutdown_deadline_s <= 3600:
            raise ConfigError("TWINTEE_SHUTDOWN_DEADLINE_S must be 0 to 3600 seconds")
        if not 0 < self.node2_recovery_s <= 3600:
            raise ConfigError("TWINTEE_NODE2_RECOVERY_S must be more than 0 and at most 3600 seconds")
        if not 1 <= self.signature_records <= 1_000_000:
            raise ConfigError("TWINTEE_SIGNATURE_RECORDS must be 1 to 1000000")
        if self.ledger_url and not self.ledger_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("TWINTEE_LEDGER_URL must be empty (SQLite in the data directory) or a postgresql:// URL")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Node1Config":
        node2_url = env_str(env, "TWINTEE_NODE2_URL", "http://127.0.0.1:5001")
        step_port = env_int(env, "TWINTEE_NODE2_STEP_PORT", 5004)  # the variable node2 listens by
        node2_host = urlsplit(node2_url).hostname  # a URL that is not http(s) is refused below anyway
        model = ModelSettings.from_env(env)
        return cls(
            host=env_str(env, "TWINTEE_NODE1_HOST", "127.0.0.1"),
            port=env_int(env, "TWINTEE_NODE1_PORT", 5002),
            node2_url=node2_url,
            node2_step_url=env_str(env, "TWINTEE_NODE2_STEP_URL",
                                   f"tcp://{node2_host}:{step_port}" if step_port and node2_host else ""),
            model=model,
            tee=TeeSettings.from_env(env),
            max_body_bytes=env_int(env, "TWINTEE_MAX_BODY_BYTES", 1 << 20),
            pipeline_slots=env_int(env, "TWINTEE_PIPELINE_SLOTS", default_pipeline_slots(model.dtype)),
            max_concurrent=env_int(env, "TWINTEE_MAX_CONCURRENT", 32),
            node2_recovery_s=env_float(env, "TWINTEE_NODE2_RECOVERY_S", 60.0),
            shutdown_deadline_s=env_float(env, "TWINTEE_SHUTDOWN_DEADLINE_S", 20.0),
            signature_records=env_int(env, "TWINTEE_SIGNATURE_RECORDS", 10000),
            ledger_url=env_str(env, "TWINTEE_LEDGER_URL", ""),
        )


def step_address(url: str) -> tuple[str, int] | None:
    """tcp://host:port -> (host, port), else None."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "tcp" or not parts.hostname or not port or parts.path not in ("", "/"):
        return None
    return parts.hostname, port


def ledger_settings(env: Mapping[str, str]) -> tuple[str, Path]:
    """(ledger URL, data directory) for the operator's CLIs, checked as node1 checks them."""
    config = Node1Config(ledger_url=env_str(env, "TWINTEE_LEDGER_URL", ""), tee=TeeSettings.from_env(env))
    return config.ledger_url, config.tee.data_dir
