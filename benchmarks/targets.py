"""The issue's targets, judged from one section's figures: met or missed, and by how much. Never asserted."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    figure: str  # what was measured, as text
    value: float
    limit: float
    at_least: bool  # True: value >= limit is met; False: value <= limit is met
    limit_text: str
    short: str  # a label for the plot
    note: str = ""
    also_required: bool = True  # a condition besides the number (e.g. identical tokens)

    @property
    def met(self) -> bool:
        within = self.value >= self.limit if self.at_least else self.value <= self.limit
        return within and self.also_required

    @property
    def margin(self) -> str:
        """Distance from the limit, relative to it: positive is room to spare, negative is the shortfall."""
        rel = (self.value - self.limit) / self.limit * (1 if self.at_least else -1)
        return f"{rel:+.0%}"


def level(section: dict, clients: int) -> dict | None:
    return next((l for l in section["concurrency"]["levels"] if l["clients"] == clients), None)


def judge(section: dict) -> list[Target]:
    d, mem, step = section["decode"], section["memory"], section["decode"]["step"]
    out = [Target("single-stream decode >= 1.3x generate()", f"{d['ratio']:.2f}x", d["ratio"], 1.3, True, ">= 1.3x",
                  "decode >= 1.3x")]
    l8 = level(section, 8)
    if l8:
        same = l8["identical"] == l8["streams"]
        out.append(Target("8 clients >= 1.2x generate() batch 8, identical tokens", f"{l8['ratio']:.2f}x",
                          l8["ratio"], 1.2, True, ">= 1.2x", "8 clients >= 1.2x",
                          f"{l8['identical']}/{l8['streams']} streams identical to their single-stream output"
                          + ("" if same else " (required: all)"), also_required=same))
    long = section["ttft"]["long"]
    out.append(Target(f"TTFT of the {long['prompt_tokens']}-token prompt <= 1.2x unsplit prefill",
                      f"{long['ratio']:.2f}x", long["ratio"], 1.2, False, "<= 1.2x", "long TTFT <= 1.2x"))
    share = step["cross_ms"] / step["step_ms"]
    out.append(Target("cross-node cost <= 5% of a decode step", f"{share:.1%} ({step['cross_ms']:.2f} ms)",
                      share, 0.05, False, "<= 5%", "cross-node <= 5%"))
    for role in ("node1", "node2"):
        m = mem[role]
        out.append(Target(f"{role}'s loaded weights <= 62% of the whole model", f"{m['weight_share']:.1%}",
                          m["weight_share"], 0.62, False, "<= 62%", f"{role} weights <= 62%",
                          f"RSS its load added: {m['rss_added_share']:.1%} of the whole"))
    return out
