"""What the load and memory tests read of a running stack: each node's gauges (/metrics and /health) and
its gunicorn worker's resident memory."""
import time

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

GAUGES = ("twintee_active_sessions", "twintee_batch_size", "twintee_kv_cache_bytes")
NODES = ("node1", "node2")


def gauges(stack) -> dict[str, dict[str, float]]:
    """{role: {gauge: value}} from each node's /metrics, plus what its /health counts (node1: batch,
    node2: sessions)."""
    out = {}
    for role in NODES:
        text = requests.get(stack.url(role) + "/metrics", timeout=10).text
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name in GAUGES}
        health = requests.get(stack.url(role) + "/health", timeout=10).json()
        for key in ("batch", "sessions"):
            if key in health:
                values[f"health.{key}"] = health[key]
        out[role] = values
    return out


def nonzero(g: dict) -> dict[str, float]:
    """{'role gauge': value} of every gauge that is not 0 (or that a node did not report at all)."""
    found = {f"{role} {name}": v for role, values in g.items() for name, v in values.items() if v != 0}
    missing = {f"{role} {name}": None for role in g for name in GAUGES if name not in g[role]}
    return {**found, **missing}


def settled_gauges(stack, timeout_s: float = 30.0) -> dict:
    """The gauges once they all read 0, or as they are when `timeout_s` has passed: node1 closes a
    session on node2 with its next step frame, so they fall a moment after the last reply."""
    deadline = time.monotonic() + timeout_s
    while True:
        g = gauges(stack)
        if not nonzero(g) or time.monotonic() > deadline:
            return g
        time.sleep(0.5)


def worker(stack, role: str) -> psutil.Process:
    """The role's gunicorn worker, the process that holds the model and its KV caches: the one process
    under the stack's started processes running that role's app whose parent runs it too (the master)."""
    app = f"{role}.wsgi"
    for top in stack.procs.values():
        root = psutil.Process(top.pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                if app in " ".join(p.cmdline()) and app in " ".join(p.parent().cmdline()):
                    return p
            except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
                continue
    raise RuntimeError(f"no gunicorn worker of {role} under the stack's processes")


def rss(stack) -> dict[str, int]:
    """{role: resident bytes of its worker}."""
    return {role: worker(stack, role).memory_info().rss for role in NODES}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"
