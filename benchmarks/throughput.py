"""Many streams at once: aggregate tokens/s at each concurrency level, split stack against a generate() batch."""
from statistics import median

from tqdm import tqdm

from benchmarks import client, scrape
from benchmarks.prompts import CONCURRENT, chat_ids
from benchmarks.stack import cpu_seconds, settle


def references(stack, plan) -> tuple[list[list[int]], dict]:
    """Each concurrent prompt alone through the split: its own greedy single-stream output.

    These sequential runs are also the 1-client level's repetitions -> (token ids per prompt, level figures).
    """
    url, refs, rates, walls, before = stack.url("node1"), [], [], [], (scrape.both(stack), cpu_seconds(stack))
    n_prompts = max(plan.levels)
    for messages in tqdm(CONCURRENT[:n_prompts], desc="single-stream references", unit="prompt"):
        wall, (reply,) = client.wave(url, stack.auth, [messages], plan.level_tokens)
        refs.append(reply["token_ids"])
        rates.append(len(reply["token_ids"]) / wall)
        walls.append(wall)
        settle(stack)
    return refs, level_figures(stack, before, rates, walls, len(refs), len(refs))


def level_figures(stack, before: tuple, rates: list[float], walls: list[float], streams: int, identical: int) -> dict:
    """Rates and per-step costs of a level; `busy` is each node's CPU time over the waves' wall time, in cores."""
    metrics_before, cpu_before = before
    costs = scrape.link_costs(scrape.diff_both(scrape.both(stack), metrics_before))
    cpu = cpu_seconds(stack)
    busy = {role: (cpu[role] - cpu_before[role]) / sum(walls) for role in cpu}
    return {"split_tps": median(rates), "streams": streams, "identical": identical, "busy": busy,
            "mean_batch": costs["tokens"] / costs["steps"] if costs["steps"] else 0.0,
            "step_ms": costs["step_ms"], "node2_ms": costs["node2_ms"],
            "wire_bytes_per_token": costs["wire_bytes_per_token"]}


def split_level(stack, clients: int, plan, refs) -> dict:
    url, rates, walls, matched = stack.url("node1"), [], [], 0
    before = (scrape.both(stack), cpu_seconds(stack))
    for _ in range(plan.level_reps):
        wall, replies = client.wave(url, stack.auth, CONCURRENT[:clients], plan.level_tokens)
        rates.append(sum(len(r["token_ids"]) for r in replies) / wall)
        walls.append(wall)
        matched += sum(r["token_ids"] == refs[i] for i, r in enumerate(replies))
        settle(stack)
    return level_figures(stack, before, rates, walls, clients * plan.level_reps, matched)


def baseline_level(base, batch: int, plan) -> float:
    ids = [chat_ids(base.tok, m) for m in CONCURRENT[:batch]]
    rates = []
    for _ in range(plan.baseline_level_reps):
        seconds, _ = base.generate(ids, plan.level_tokens)
        rates.append(batch * plan.level_tokens / seconds)
    return median(rates)


def levels(base, stack, plan) -> dict:
    refs, single = references(stack, plan)
    out = []
    for c in tqdm(plan.levels, desc="concurrency levels", unit="level"):
        b = baseline_level(base, c, plan)
        s = single if c == 1 else split_level(stack, c, plan, refs)
        out.append({"clients": c, **s, "baseline_tps": b, "ratio": s["split_tps"] / b})
    return {"tokens": plan.level_tokens, "levels": out,
            "completion_tokens": [len(r) for r in refs]}
