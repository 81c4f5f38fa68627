"""Reads the nodes' Prometheus /metrics and turns before/after snapshots into per-step costs."""
import requests
from prometheus_client.parser import text_string_to_metric_families


def snapshot(url: str) -> dict[str, float]:
    """{'name{label=value,...}': value} for every sample of a node's /metrics."""
    text = requests.get(url + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" not in s.labels:  # bucket counts are not needed: only _sum and _count
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


def diff(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def both(stack) -> dict:
    return {role: snapshot(stack.url(role)) for role in ("node1", "node2")}


def diff_both(after: dict, before: dict) -> dict:
    return {role: diff(after[role], before[role]) for role in after}


def subtract(a: dict, b: dict) -> dict:
    """a - b per role, e.g. a whole request minus its prefill-only twin = its decode steps alone."""
    return {role: diff(a[role], b[role]) for role in a}


def link_costs(d: dict) -> dict:
    """Per-step figures from a (node1, node2) metrics difference. Times in ms, sizes in bytes."""
    n1, n2 = d["node1"], d["node2"]
    link_n, step_n, n2_n = n1["twintee_link_roundtrip_seconds_count{}"], n1["twintee_step_seconds_count{}"], \
        n2["twintee_step_seconds_count{}"]
    link = n1["twintee_link_roundtrip_seconds_sum{}"] / link_n if link_n else 0.0
    node2 = n2["twintee_step_seconds_sum{}"] / n2_n if n2_n else 0.0
    step = n1["twintee_step_seconds_sum{}"] / step_n if step_n else 0.0
    tokens = n1["twintee_tokens_generated_total{}"]
    wire = n1["twintee_wire_bytes_total{direction=sent}"] + n1["twintee_wire_bytes_total{direction=received}"]
    return {
        "steps": step_n,
        "tokens": tokens,
        "step_ms": step * 1e3,  # node1's whole step: its layers + the link (which includes node2's step)
        "link_ms": link * 1e3,
        "node2_ms": node2 * 1e3,
        "node1_ms": (step - link) * 1e3,
        "cross_ms": (link - node2) * 1e3,  # serialize + seal + the step socket (or HTTP) + open, both ways
        "wire_bytes_per_token": wire / tokens if tokens else 0.0,
        "wire_bytes_per_step": wire / step_n if step_n else 0.0,
    }
