"""The sampling parameters a request carries from node1 to node2: one definition, validated once in
`__post_init__`, with the same limits on both nodes (node1 refuses with a 400 naming the field;
node2 refuses that one session, never the step it rides in)."""
import math
import secrets
from dataclasses import asdict, dataclass, replace

MAX_TEMPERATURE = 2.0  # OpenAI's range
# Below this a temperature picks the arg-max anyway (a 1e-5 temperature scales a logit gap of 0.01
# to 1000 nats), and dividing by much smaller ones overflows float32 (1e-320 gives inf - inf = nan
# in the softmax), so they are greedy by definition.
GREEDY_BELOW = 1e-5
MIN_TOP_P = 1e-6
MAX_SEED = 2**63 - 1
MAX_LOGPROBS = 5  # OpenAI's top_logprobs limit for completions; each costs node2 a top-k per token


class SamplingError(ValueError):
    """A sampling parameter is of the wrong type or out of range; the message names the field."""


def _number(value, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise SamplingError(f"'{name}' must be a number in [{lo}, {hi}]")
    return float(value)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 (or below GREEDY_BELOW) = greedy
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None  # None: none; k: each token's logprob and its k most likely candidates'

    def __post_init__(self):
        object.__setattr__(self, "temperature", _number(self.temperature, "temperature", 0.0, MAX_TEMPERATURE))
        object.__setattr__(self, "top_p", _number(self.top_p, "top_p", MIN_TOP_P, 1.0))
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
            raise SamplingError(f"'seed' must be an integer from 0 to {MAX_SEED}")
        k = self.logprobs
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_LOGPROBS):
            raise SamplingError(f"'logprobs' must be an integer from 0 to {MAX_LOGPROBS}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def with_fixed_seed(self) -> "SamplingParams":
        """A sampled request without a seed gets a random one, once, on node1: a session replayed into
        a restarted node2 then draws the very tokens the lost one would have (greedy needs none)."""
        if self.greedy or self.seed is not None:
            return self
        return replace(self, seed=secrets.randbelow(MAX_SEED + 1))

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingParams":
        return cls(d.get("temperature", 0.0), d.get("top_p", 1.0), d.get("seed"), d.get("logprobs"))

    def to_dict(self) -> dict:
        return asdict(self)
