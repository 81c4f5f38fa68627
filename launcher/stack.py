"""TwinTEE's processes under gunicorn on loopback: the exact command per role, and `Stack`, which starts,
waits for and stops them (for `make run`, the end-to-end tests and the benchmark)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from shared.config import GUNICORN_THREADS
from shared.cpu import library_caps

ROOT = Path(__file__).resolve().parents[1]
APPS = {"node1": "node1.wsgi:app_from_env()", "node2": "node2.wsgi:app_from_env()",
        "broker": "broker.wsgi:app_from_env()"}
PORT_VARS = {"node1": ("TWINTEE_NODE1_HOST", "TWINTEE_NODE1_PORT", 5002),
             "node2": ("TWINTEE_NODE2_HOST", "TWINTEE_NODE2_PORT", 5001),
             "broker": ("TWINTEE_BROKER_HOST", "TWINTEE_BROKER_PORT", 5003)}


def broker_env(env: dict) -> dict:
    """The broker's settings, defaulting to the release directory's files."""
    data = Path(env.get("TWINTEE_DATA_DIR", "data")).resolve()
    defaults = {
        "TWINTEE_BROKER_DATA_DIR": str(data),
        "TWINTEE_BROKER_AUDIT_LOG": str(data / "audit" / "broker.jsonl"),
        "TWINTEE_BROKER_RELEASE_PUBLIC_KEY": str(data / "keys" / "owner.pub"),
        "TWINTEE_BROKER_POLICY": str(data / "policy.json"),
        "TWINTEE_BROKER_PORT": "5003",
    }
    if not env.get("TWINTEE_BROKER_MASTER_KEY"):
        defaults["TWINTEE_BROKER_MASTER_KEY_FILE"] = str(data / "keys" / "master.key")
    return {**defaults, **env}


def gunicorn_command(role: str, env: dict) -> list[str]:
    """The exact command that serves one role (the Dockerfiles run the same)."""
    host_var, port_var, port = PORT_VARS[role]
    bind = f"{env.get(host_var, '127.0.0.1')}:{env.get(port_var, port)}"
    # One worker: sessions and KV caches live in this process's memory. Threads serve concurrent clients.
    # The worker's heartbeat fchmods a file on every event-loop turn (py-spy: ~1% of node2's time at
    # one stream); gunicorn's FAQ puts it in memory (/dev/shm) so a disk-backed /tmp cannot stall it.
    tmp = ["--worker-tmp-dir", "/dev/shm"] if os.path.isdir("/dev/shm") else []
    return [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread", "--threads", str(GUNICORN_THREADS),
            "--bind", bind, "--timeout", "120", "--graceful-timeout", "5", "--no-control-socket", *tmp, APPS[role]]


class Stack:
    def __init__(self, env: dict | None = None, log_dir: Path | None = None, root: Path = ROOT):
        self.root = root  # a checkout to run from (tests run a modified copy to see it refused)
        # Both nodes share this machine: give each half the cores unless told otherwise (measured
        # here: 23 tokens/s single-stream at 1 thread each, 20 at torch's default of 2 each).
        shared_cores = {"TWINTEE_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
        env = {**shared_cores, **os.environ, **(env or {}), "PYTHONPATH": str(root)}
        # TWINTEE_CPU_ISA=avx2 runs every process as on an AVX2-only CPU, math libraries included.
        self.env = broker_env({**env, **library_caps(env.get("TWINTEE_CPU_ISA", "native"))})
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def url(self, role: str) -> str:
        host_var, port_var, port = PORT_VARS[role]
        return f"http://{self.env.get(host_var, '127.0.0.1')}:{self.env.get(port_var, port)}"

    def start(self, role: str) -> subprocess.Popen:
        out = open(self.log_dir / f"{role}.log", "ab") if self.log_dir else None
        self.procs[role] = subprocess.Popen(gunicorn_command(role, self.env), cwd=self.root, env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT if out else None)
        return self.procs[role]

    def wait_healthy(self, role: str, timeout: float = 180.0) -> dict:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.procs[role].poll() is not None:
                raise RuntimeError(f"{role} exited with code {self.procs[role].returncode}")
            try:
                r = requests.get(self.url(role) + "/health", timeout=5)
                last = r.json()
                if r.status_code == 200:
                    return last
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{role} not healthy after {timeout:.0f}s: {last}")

    def stop(self, role: str | None = None) -> None:
        for name in [role] if role else list(self.procs)[::-1]:
            proc = self.procs.pop(name, None)
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
