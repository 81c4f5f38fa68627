"""Picks the next token from logits: greedy, temperature and top-p, reproducible with a seed.

A seeded draw depends only on (seed, position), never on how many draws came before: a session
replayed into a restarted node2 draws at each position exactly the token the lost one drew.
"""
import hashlib
import secrets

import torch

from shared.sampling import MAX_SEED, SamplingParams


def session_seed(s: SamplingParams) -> int:
    """The seed a session draws with: the request's, or a random one fixed for the session's life."""
    return s.seed if s.seed is not None else secrets.randbelow(MAX_SEED + 1)


def generator(seed: int, position: int) -> torch.Generator:
    """A generator for the token at `position`, mixed from both numbers so neighbouring seeds or
    positions share no stream."""
    digest = hashlib.sha256(f"twintee-sample:{seed}:{position}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & MAX_SEED)
    return g


def argmax(logits: torch.Tensor) -> int:
    """logits: [V] -> the first index of the largest (a NaN counts as largest, as in torch.argmax).

    On the CPU through numpy, which scans on the calling thread: torch splits a 49152-wide argmax over
    its OpenMP threads, and waking them from OMP_WAIT_POLICY=PASSIVE's sleep cost ~60 us a token
    against ~3 us for the scan itself (measured on the 2-core Xeon).
    """
    if logits.device.type != "cpu":
        return int(torch.argmax(logits))
    return int(logits.numpy().argmax())


def argmax_rows(logits: torch.Tensor) -> list[int]:
    """logits: [B, V] -> each row's `argmax` in one call (numpy scans a row exactly as `argmax` does)."""
    if logits.device.type != "cpu":
        return torch.argmax(logits, dim=-1).tolist()
    return logits.numpy().argmax(axis=-1).tolist()


def sample(logits: torch.Tensor, s: SamplingParams, seed: int, position: int) -> int:
    """logits: [V] float32 -> the token at `position`. Never raises on finite logits: a distribution
    that cannot be sampled (all mass lost to rounding) falls back to the arg-max."""
    if s.greedy:
        return argmax(logits)
    probs = torch.softmax(logits / s.temperature, dim=-1)  # T >= 1e-5: no overflow in float32
    if s.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        keep = (sorted_p.cumsum(-1) - sorted_p) < s.top_p
        probs, index = sorted_p * keep, order
    else:
        index = None
    total = probs.sum()
    if not torch.isfinite(total) or total <= 0:
        return argmax(logits)
    pick = int(torch.multinomial(probs / total, 1, generator=generator(seed, position)))
    return int(index[pick]) if index is not None else pick


LOGPROB_FLOOR = -9999.0  # what OpenAI reports for a token the model gives no chance: finite, for JSON


def logprobs(logits: torch.Tensor, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """logits: [V], the very row `token` was drawn from -> (token's logprob, the k most likely [(id, logprob)]).

    The model's own distribution, before temperature and top-p, as OpenAI and vLLM report it; drawing
    the token is untouched (this runs after it and uses no generator)."""
    lp = torch.log_softmax(logits.float(), dim=-1)  # [V]
    top = torch.topk(lp, k) if k else None
    pairs = [] if top is None else [(int(i), _floor(v)) for v, i in zip(top.values.tolist(), top.indices.tolist())]
    return _floor(float(lp[token])), pairs


def _floor(v: float) -> float:
    return max(min(v, 0.0), LOGPROB_FLOOR)
