"""Helpers for the end-to-end tests: a real stack (broker, node2, node1 under gunicorn) on loopback."""
import os
from pathlib import Path

from launcher.stack import Stack

# Every test stack's ports are offsets from one base, so two checkouts (git worktrees) can run their
# suites side by side with different TWINTEE_TEST_PORT_BASE values.
PORT_BASE = int(os.environ.get("TWINTEE_TEST_PORT_BASE", "15100"))


def own_ports(offset: int) -> dict:
    """The environment of a stack on ports PORT_BASE+offset (node2), +1 (node1), +2 (broker)."""
    node2, node1, broker = (PORT_BASE + offset + i for i in range(3))
    return {"TWINTEE_NODE2_PORT": str(node2), "TWINTEE_NODE1_PORT": str(node1), "TWINTEE_BROKER_PORT": str(broker),
            "TWINTEE_NODE2_URL": f"http://127.0.0.1:{node2}", "TWINTEE_BROKER_URL": f"http://127.0.0.1:{broker}"}


PORTS = own_ports(1)


def stack_env(data_dir: Path, **extra) -> dict:
    return {
        **PORTS,
        "TWINTEE_DATA_DIR": str(data_dir),
        "TWINTEE_THREADS": "1",
        **extra,
    }


def start_stack(data_dir: Path, log_dir: Path, roles=("broker", "node2", "node1"), **extra) -> Stack:
    stack = Stack(stack_env(data_dir, **extra), log_dir)
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
