"""Picks the next token from logits: greedy, temperature and top-p, reproducible with a seed."""
import torch

from shared.sampling import SamplingParams


def generator(s: SamplingParams) -> torch.Generator | None:
    if s.greedy:
        return None
    g = torch.Generator()
    if s.seed is None:
        g.seed()
    else:
        g.manual_seed(s.seed)
    return g


def sample(logits: torch.Tensor, s: SamplingParams, gen: torch.Generator | None) -> int:
    """logits: [V] float32 -> one token id. Never raises on finite logits: a distribution that
    cannot be sampled (all mass lost to rounding) falls back to the arg-max."""
    if s.greedy:
        return int(torch.argmax(logits))
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
        return int(torch.argmax(logits))
    pick = int(torch.multinomial(probs / total, 1, generator=gen))
    return int(index[pick]) if index is not None else pick
