"""The real stack (broker, node2, node1 under gunicorn, sealing on) on the benchmark's own ports."""
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from launcher.stack import Stack

PORTS = {"TWINTEE_NODE2_PORT": "15201", "TWINTEE_NODE1_PORT": "15202", "TWINTEE_BROKER_PORT": "15203",
         "TWINTEE_NODE2_STEP_PORT": "15204"}


def bench_env(data_dir: Path, dtype: str, threads: int) -> dict:
    return {
        **PORTS,
        "TWINTEE_DATA_DIR": str(data_dir),
        "TWINTEE_NODE2_URL": f"http://127.0.0.1:{PORTS['TWINTEE_NODE2_PORT']}",
        "TWINTEE_BROKER_URL": f"http://127.0.0.1:{PORTS['TWINTEE_BROKER_PORT']}",
        "TWINTEE_THREADS": str(threads),
        "TWINTEE_DTYPE": dtype,
    }


def check_ports_free() -> None:
    for port in PORTS.values():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(port))) == 0:
                raise RuntimeError(f"port {port} is taken (a benchmark left running?); the bench needs 15201-15204")


@contextmanager
def running_stack(data_dir: Path, log_dir: Path, dtype: str, threads: int):
    """Yields a healthy Stack; always stops it. Logs go to log_dir for a failed start's post-mortem."""
    check_ports_free()
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(bench_env(data_dir, dtype, threads), log_dir)
    try:
        start(stack)
        yield stack
    finally:
        stack.stop()


def bench_auth(stack: Stack) -> dict:
    """The Authorization header of the bench's own tenant `bench`, made with no limits (a quota would
    throttle the measurement) in the stack's ledger beside its release, its key in `bench-api-key` (0600)."""
    from node1.config import ledger_settings
    from node1.store import Store
    from node1.tenants import Tenants, ensure_key

    ledger_url, data_dir = ledger_settings(stack.env)
    key = ensure_key(Tenants(Store.open(ledger_url, data_dir)), data_dir / "bench-api-key", "bench")
    return {"Authorization": f"Bearer {key}"}


def start(stack: Stack) -> None:
    """Starts the stack; `stack.auth` is then the bench tenant's Authorization header."""
    stack.auth = bench_auth(stack)
    try:
        stack.start("broker")
        stack.wait_healthy("broker")
        stack.start("node2")
        stack.start("node1")
        stack.wait_healthy("node2", timeout=300)
        stack.wait_healthy("node1", timeout=300)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"the stack did not start: {exc} (logs in {stack.log_dir})") from None


def health(stack: Stack, role: str) -> dict:
    return requests.get(stack.url(role) + "/health", timeout=10).json()


def worker(stack: Stack, role: str) -> psutil.Process:
    """The gunicorn worker: the master's one child, the process that holds the model and does the work."""
    return psutil.Process(stack.procs[role].pid).children()[0]


def worker_rss(stack: Stack, role: str) -> int:
    with open(f"/proc/{worker(stack, role).pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {role}'s worker")


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time each node's worker has used so far (all its threads, user + system)."""
    out = {}
    for role in ("node1", "node2"):
        t = worker(stack, role).cpu_times()
        out[role] = t.user + t.system
    return out


def settle(stack: Stack, timeout: float = 10.0) -> None:
    """Waits until node2 holds no session: node1 has sent its close frame, so the metrics are final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health(stack, "node2").get("sessions", 0) == 0:
            time.sleep(0.02)  # node1 observes the close frame's round trip just after node2 answers it
            return
        time.sleep(0.01)
