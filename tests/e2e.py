"""Helpers for the end-to-end tests: a real stack (broker, node2, node1 under gunicorn) on loopback."""
import os
from pathlib import Path

from launcher.stack import Stack

# Every test stack's ports are offsets from one base, so two checkouts (git worktrees) can run their
# suites side by side with different TWINTEE_TEST_PORT_BASE values.
PORT_BASE = int(os.environ.get("TWINTEE_TEST_PORT_BASE", "15100"))


def own_ports(offset: int) -> dict:
    """The environment of a stack on ports PORT_BASE+offset (node2), +1 (node1), +2 (broker), +3 (node2's
    step socket)."""
    node2, node1, broker, step = (PORT_BASE + offset + i for i in range(4))
    return {"TWINTEE_NODE2_PORT": str(node2), "TWINTEE_NODE1_PORT": str(node1), "TWINTEE_BROKER_PORT": str(broker),
            "TWINTEE_NODE2_STEP_PORT": str(step),
            "TWINTEE_NODE2_URL": f"http://127.0.0.1:{node2}", "TWINTEE_BROKER_URL": f"http://127.0.0.1:{broker}"}


PORTS = own_ports(1)


def counter(metrics: str, name: str) -> float:
    """One sample's value in a /metrics text (`name` with its labels as printed), 0 if absent."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def stack_env(data_dir: Path, **extra) -> dict:
    return {
        **PORTS,
        "TWINTEE_DATA_DIR": str(data_dir),
        "TWINTEE_THREADS": "1",
        **extra,
    }


def tenant_key(data_dir: Path, env: dict | None = None, name: str = "tests") -> str:
    """The API key of tenant `name` (no limits) in the stack's ledger database, kept beside the release
    as `<name>-api-key` and reissued when that database does not know it (a fresh PostgreSQL server)."""
    from node1.config import ledger_settings
    from node1.store import Store
    from node1.tenants import Tenants, ensure_key

    url, _ = ledger_settings({"TWINTEE_DATA_DIR": str(data_dir), **(env or {})})
    return ensure_key(Tenants(Store.open(url, Path(data_dir))), Path(data_dir) / f"{name}-api-key", name)


def start_stack(data_dir: Path, log_dir: Path, roles=("broker", "node2", "node1"), **extra) -> Stack:
    """A running stack; `stack.api_key` and `stack.auth` (the header) are the default test tenant's."""
    stack = Stack(stack_env(data_dir, **extra), log_dir)
    stack.api_key = tenant_key(data_dir, extra)
    stack.auth = {"Authorization": f"Bearer {stack.api_key}"}
    return start_roles(stack, roles)


def start_roles(stack: Stack, roles) -> Stack:
    try:
        for role in roles:
            stack.start(role)
            if role == "broker":
                stack.wait_healthy(role)
        for role in roles:
            stack.wait_healthy(role)
    except Exception:
        stack.stop()
        raise
    return stack
