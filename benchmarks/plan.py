"""How much the benchmark measures: repetitions and token counts for a full run and for --quick."""
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    ttft_reps: int = 5
    decode_reps: int = 3
    decode_tokens: int = 128
    level_reps: int = 3  # waves of concurrent clients per level on the split stack
    baseline_level_reps: int = 2  # generate() batches per level: the slowest part of the run
    level_tokens: int = 64
    levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    long_prompt_tokens: int = 400

    def __post_init__(self):
        if min(self.ttft_reps, self.decode_reps, self.level_reps, self.baseline_level_reps) < 1:
            raise ValueError("every repetition count must be at least 1")
        if self.decode_tokens < 2 or self.level_tokens < 2:
            raise ValueError("a decode rate needs at least 2 tokens")


FULL = Plan()
# The second dtype's section: same figures, fewer repetitions, so both fit in ~12 minutes on 2 cores.
SECOND = replace(FULL, ttft_reps=3, decode_reps=2, level_reps=2, baseline_level_reps=1)
QUICK = Plan(ttft_reps=2, decode_reps=1, decode_tokens=32, level_reps=1, baseline_level_reps=1, level_tokens=16)
