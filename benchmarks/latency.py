"""One stream at a time: time to first token and decode rate, split stack against generate()."""
from statistics import median

from tqdm import tqdm

from benchmarks import client, scrape
from benchmarks.prompts import DECODE, SHORT, chat_ids, long_prompt
from benchmarks.stack import settle


def ttft(base, stack, plan) -> dict:
    """Short and ~400-token prompts: generate()'s prefill vs the split's first streamed token."""
    url, out = stack.url("node1"), {}
    for name, messages in (("short", SHORT), ("long", long_prompt(base.tok, plan.long_prompt_tokens))):
        ids = chat_ids(base.tok, messages)
        base.prefill_ms(ids), client.stream_first_token(url, stack.auth, messages)  # warm-up: first calls allocate
        settle(stack)
        before = scrape.both(stack)
        b, s = [], []
        for _ in tqdm(range(plan.ttft_reps), desc=f"TTFT {name} prompt", unit="rep"):
            b.append(base.prefill_ms(ids))
            s.append(client.stream_first_token(url, stack.auth, messages))
            settle(stack)
        steps = scrape.link_costs(scrape.diff_both(scrape.both(stack), before))
        split_ms = median(r["client_ttft_ms"] for r in s)
        out[name] = {"prompt_tokens": len(ids), "baseline_ms": median(b), "split_ms": split_ms,
                     "split_server_ms": median(r["server_ttft_ms"] for r in s), "ratio": split_ms / median(b),
                     "node2_step_ms": steps["node2_ms"], "node1_step_ms": steps["step_ms"]}
    return out


def split_decode_rep(stack, messages, n: int) -> tuple[dict, dict]:
    """One request of n tokens and its prefill-only twin; their metric difference is the decode steps alone."""
    url = stack.url("node1")
    s0 = scrape.both(stack)
    client.generate(url, stack.auth, messages, 1)
    settle(stack)
    s1 = scrape.both(stack)
    reply = client.generate(url, stack.auth, messages, n)
    settle(stack)
    s2 = scrape.both(stack)
    prefill_only, whole = scrape.diff_both(s1, s0), scrape.diff_both(s2, s1)
    return reply, scrape.link_costs(scrape.subtract(whole, prefill_only))


def decode(base, stack, plan) -> dict:
    """Single-stream decode tokens/s, and what one decode step costs across the two nodes."""
    ids, n = chat_ids(base.tok, DECODE), plan.decode_tokens
    prefill = median(base.prefill_ms(ids) for _ in range(2))
    b_rates, s_rates, costs, b_tokens, reply = [], [], [], None, None
    for _ in tqdm(range(plan.decode_reps), desc=f"decode {n} tokens", unit="rep"):
        rate, b_tokens = base.decode_rate(ids, n, prefill)
        b_rates.append(rate)
        reply, cost = split_decode_rep(stack, DECODE, n)
        s_rates.append(reply["metrics"]["tokens_per_sec"])
        costs.append(cost)
    got = reply["token_ids"]
    return {"tokens": n, "split_tokens": len(got), "baseline_tps": median(b_rates), "split_tps": median(s_rates),
            "ratio": median(s_rates) / median(b_rates), "same_tokens_as_generate": got == b_tokens[: len(got)],
            "step": {k: median(c[k] for c in costs) for k in costs[0]}}
