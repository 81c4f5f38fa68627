"""What each node's weights occupy against the whole model's, and each node's steady-state RSS."""
import torch

from benchmarks.stack import health, worker_rss


def whole_model_bytes(model, dtype: torch.dtype) -> tuple[int, int]:
    """-> (parameters, bytes at dtype); `parameters()` yields the tied embedding/head once."""
    params = sum(p.numel() for p in model.parameters())
    return params, params * torch.empty(0, dtype=dtype).element_size()


def memory(stack, model, dtype: torch.dtype) -> dict:
    params, whole = whole_model_bytes(model, dtype)
    out = {"whole_params": params, "whole_bytes": whole}
    for role in ("node1", "node2"):
        mem = health(stack, role)["memory"]
        out[role] = {"weight_bytes": mem["weight_bytes"], "weight_share": mem["weight_bytes"] / whole,
                     "rss_added_bytes": mem["rss_added_bytes"], "rss_added_share": mem["rss_added_bytes"] / whole,
                     "load_s": mem["load_s"], "steady_rss_bytes": worker_rss(stack, role)}
    return out
