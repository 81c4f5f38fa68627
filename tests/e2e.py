"""Helpers for the end-to-end tests: a real stack (broker, node2, node1 under gunicorn) on loopback."""
from pathlib import Path

from launcher.stack import Stack

PORTS = {"TWINTEE_NODE2_PORT": "15101", "TWINTEE_NODE1_PORT": "15102", "TWINTEE_BROKER_PORT": "15103"}


def stack_env(data_dir: Path, **extra) -> dict:
    return {
        **PORTS,
        "TWINTEE_DATA_DIR": str(data_dir),
        "TWINTEE_NODE2_URL": f"http://127.0.0.1:{PORTS['TWINTEE_NODE2_PORT']}",
        "TWINTEE_BROKER_URL": f"http://127.0.0.1:{PORTS['TWINTEE_BROKER_PORT']}",
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
