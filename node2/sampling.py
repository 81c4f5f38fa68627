"""Picks the next token from logits: greedy, temperature and top-p, reproducible with a seed."""
from dataclasses import dataclass

import torch


class SamplingError(ValueError):
    """Sampling parameters from the peer are out of range."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Sampling":
        try:
            s = cls(float(d.get("temperature", 0.0)), float(d.get("top_p", 1.0)), d.get("seed"))
        except (TypeError, ValueError):
            raise SamplingError("temperature and top_p must be numbers") from None
        if not (0.0 <= s.temperature <= 100.0) or not (0.0 < s.top_p <= 1.0):
            raise SamplingError("temperature must be in [0, 100] and top_p in (0, 1]")
        if s.seed is not None and not isinstance(s.seed, int):
            raise SamplingError("seed must be an integer")
        return s

    def generator(self) -> torch.Generator | None:
        if self.temperature == 0.0:
            return None
        g = torch.Generator()
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed)
        return g


def sample(logits: torch.Tensor, s: Sampling, gen: torch.Generator | None) -> int:
    """logits: [V] float32 -> one token id."""
    if s.temperature == 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        keep = (sorted_p.cumsum(-1) - sorted_p) < s.top_p
        sorted_p = sorted_p * keep
        return int(order[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)])
    return int(torch.multinomial(probs, 1, generator=gen))
