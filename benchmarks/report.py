"""Writes RESULTS.md from one run's results: machine, per-dtype tables, targets and what bounds the misses."""
import time
from pathlib import Path

from benchmarks.bounds import bandwidth_line, bounds, profile_lines
from benchmarks.noise import QUIET_CORES
from benchmarks.targets import judge


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


TITLE = """# TwinTEE benchmark: the split stack against the unsplit model

One section per kind of CPU the benchmark has run on: machines differ (AVX-512 with or without AMX,
AVX2-only), and so do the kernels the nodes choose (`/health`'s `compute`). Reproduce a section with
**`make bench`** on that kind of machine; `make bench CPU_ISA=avx2` runs an AVX-512 machine as an
AVX2-only one (oneDNN, MKL and ATen capped with `ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2`, and
`TWINTEE_CPU_ISA=avx2` hiding the bfloat16 kernels torch would find by reading the CPU itself).
A run rewrites only its own kind's section."""
KIND_TITLES = {"avx512": "AVX-512", "avx2": "AVX2 only", "baseline": "no AVX2"}


def cpu_kind(m: dict) -> tuple[str, str]:
    """-> (key, heading) of the RESULTS.md section this run's machine belongs to."""
    key = m.get("isa", "avx512")
    title = KIND_TITLES.get(key, key)
    if m.get("capped_to", "native") != "native":
        key += "-capped"
        title += f" (imitated: an {m['cpu']} with avx512 capped to AVX2)"
    else:
        title += f" ({m['cpu']})"
    return key, title


def header(r: dict) -> str:
    m, dtypes = r["machine"], ", ".join(r["sections"])
    k, n = r["split"], r["num_layers"]
    key, title = cpu_kind(m)
    return f"""## CPU kind: {title}

Reproduce with **`make bench{' CPU_ISA=avx2' if key.endswith('-capped') else ''}`** (`--quick` for a short smoke run).
Written {time.strftime('%Y-%m-%d %H:%M', time.localtime())} from revision {m['revision']}; the run took
{r['elapsed_s'] / 60:.1f} minutes ({dtypes}){' — QUICK MODE: few repetitions, not for quoting' if r['quick'] else ''}.
{r.get('note', '')}

What runs: {r['model_id']} split at layer {k} of {n}. node1 = tokenizer, embedding, layers 0-{k - 1}
(public `POST /generate`); node2 = layers {k}-{n - 1}, final norm, head, sampling. Both are real gunicorn
processes on loopback behind the key broker, with the attested handshake and AES-GCM sealed frames
on, each with `TWINTEE_THREADS={m['node_threads']}`; node1 keeps {slots_text(r['node1']['pipeline_slots'])} pipeline slot(s) (micro-batches
in flight to node2) of up to {r['node1']['max_batch']} sequences each. The release used: {r['release']}.
The baseline is transformers' `generate()` (greedy) on the whole unsplit model in the benchmark's own
process ({m['baseline_threads']} torch threads), on the same prompts, in the same dtype, in the same run,
alternating with the split's measurements so background load falls on both alike.
Every figure is a median over repetitions; "ratio" is split / baseline.

### Machine

{table(["cores", "CPU", "vector flags", "flags the nodes use", "kernel path (node2's /health)", "memory", "torch",
        "torch threads"],
       [[m["cores"], m["cpu"], " ".join(m["flags"]), " ".join(m.get("node_flags", [])) + f" ({m.get('isa', '?')})",
         kernel_text(r), f"{m['memory_gib']} GiB", f"{m['torch']} ({m['cpu_capability']})",
         f"baseline {m['baseline_threads']}, each node {m['node_threads'] or 'default'}"]])}

Load average (1/5/15 min) when the run started: {" / ".join(str(x) for x in m["load_average"])}; when it
ended: {" / ".join(str(x) for x in r.get("load_average_end", []))}. Anything else running on the machine slows
both sides, and the 2-thread baseline more than the 1-thread nodes (its threads wait for each other).
"""


def slots_text(slots: dict | int) -> str:
    """{dtype: slots} -> "2 (float32), 1 (q4_1)"; a run recorded before slots depended on the dtype has one number."""
    return str(slots) if isinstance(slots, int) else ", ".join(f"{n} ({d})" for d, n in slots.items())


def kernel_text(r: dict) -> str:
    c = next((s["compute"] for s in r["sections"].values() if s.get("compute")), None)
    if not c:
        return "not recorded"
    plans = ", ".join(f"{shape}: {p['min']}-{p['max'] or 'any'}" for shape, p in sorted(c["rows"].items()))
    return f"{c['kernel']}; rows per kernel call (probed at load): {plans}"


def targets_block(targets) -> str:
    rows = [[t.name, t.figure, t.limit_text, "**met**" if t.met else "**missed**", t.margin, t.note] for t in targets]
    return table(["target", "measured", "limit", "", "margin (+ room, - shortfall)", "note"], rows)


def ttft_block(s: dict) -> str:
    rows = [[name, t["prompt_tokens"], f"{t['baseline_ms']:.0f}", f"{t['split_ms']:.0f}", f"{t['split_server_ms']:.0f}",
             f"{t['ratio']:.2f}x", f"{t['node1_step_ms']:.0f} / {t['node2_step_ms']:.0f}"] for name, t in s["ttft"].items()]
    return table(["prompt", "tokens", "generate() prefill ms", "split TTFT ms (client, first SSE token)",
                  "split TTFT ms (node1's metric)", "ratio", "prefill step ms: node1 (incl. link) / node2"], rows)


def decode_block(s: dict) -> str:
    d, st = s["decode"], s["decode"]["step"]
    rows = [[d["tokens"], d["split_tokens"], f"{d['baseline_tps']:.1f}", f"{d['split_tps']:.1f}", f"{d['ratio']:.2f}x",
             "yes" if d["same_tokens_as_generate"] else "**no**"]]
    cost = [[f"{st['step_ms']:.2f}", f"{st['node1_ms']:.2f}", f"{st['node2_ms']:.2f}", f"{st['cross_ms']:.2f}",
             f"{st['cross_ms'] / st['step_ms']:.1%}", f"{st['wire_bytes_per_token']:,.0f}"]]
    return (table(["tokens asked", "split produced", "generate() tok/s", "split tok/s", "ratio",
                   "split's tokens = generate()'s"], rows)
            + "\n\nOne decode step, single stream (decode steps only: each request minus its prefill-only twin):\n\n"
            + table(["decode step ms", "node1 layers ms", "node2 step ms", "cross-node ms (seal + step socket + open)",
                     "cross-node share", "wire bytes per token"], cost)
            + "\n\n" + bandwidth_line(s))


def levels_block(s: dict) -> str:
    c, rows = s["concurrency"], []
    for l in c["levels"]:
        busy = l["busy"]
        rows.append([l["clients"], f"{l['baseline_tps']:.1f}", f"{l['split_tps']:.1f}", f"{l['ratio']:.2f}x",
                     f"{l['identical']}/{l['streams']}", f"{l['mean_batch']:.1f}",
                     f"{l['step_ms']:.1f} / {l['node2_ms']:.1f}", f"{busy['node1']:.2f} / {busy['node2']:.2f}",
                     f"{l['wire_bytes_per_token']:,.0f}"])
    return (f"Each client asks for {c['tokens']} tokens with its own prompt; the baseline runs `generate()` on a "
            f"left-padded batch of the same prompts (attention mask, `min_new_tokens` so every row decodes "
            f"{c['tokens']} tokens). Streams \"identical\" = token ids equal to that prompt's own single-stream "
            f"run through the split (the 1-client level).\n\n"
            + table(["clients", "generate() batch tok/s", "split tok/s", "ratio", "streams identical",
                     "sequences per step (per slot)", "step ms node1 / node2", "CPU cores busy node1 / node2",
                     "wire bytes per token"], rows))


def memory_block(s: dict) -> str:
    m, rows = s["memory"], []
    for role in ("node1", "node2"):
        r = m[role]
        rows.append([role, f"{mb(r['weight_bytes'])} ({r['weight_share']:.1%})", f"{mb(r['rss_added_bytes'])} "
                     f"({r['rss_added_share']:.1%})", mb(r["steady_rss_bytes"]), f"{r['load_s']:.1f}"])
    return (f"The whole model: {m['whole_params'] / 1e6:.1f} M parameters (tied embedding counted once) = "
            f"{mb(m['whole_bytes'])} in {s['dtype']}. Each node holds its own layers plus the embedding (node1) or "
            f"the final norm and head (node2), nothing of the other's.\n\n"
            + table(["node", "loaded weights (share of whole)", "RSS its load added (share of whole)",
                     "steady-state RSS of the worker", "load s"], rows))


def noise_line(s: dict) -> str:
    noise = s.get("noise")
    if not noise:
        return "Other work on the machine during this section was not recorded."
    phases = ", ".join(f"{name} {n['mean']:.2f} (peak {n['max']:.2f})" for name, n in noise.items())
    text = f"Cores kept busy by processes outside the benchmark, on average per phase: {phases}."
    noisy = [name for name, n in noise.items() if n["mean"] > QUIET_CORES]
    if noisy:
        text += (f" **Other work shared the machine during {', '.join(noisy)}: those figures are skewed "
                 f"(the 2-thread baseline suffers most) and should be re-measured on a quiet machine.**")
    return text


def section(s: dict) -> str:
    targets = judge(s)
    explained = bounds(s, targets)
    when = f"Measured {s['measured_at']}. " if s.get("measured_at") else ""
    parts = [f"## {s['dtype']}", when + noise_line(s), "### Targets", targets_block(targets),
             "### Time to first token", ttft_block(s),
             "### Single-stream decode", decode_block(s),
             "### Aggregate throughput, concurrent clients", levels_block(s),
             "### Memory", memory_block(s),
             "### What bounds the missed targets" if explained else "### Profile",
             "\n\n".join(explained) if explained else "Every target was met; the lean-path profile for reference:",
             "\n".join(profile_lines(s["profile"]))]
    return "\n\n".join(parts)


def png_name(results: dict) -> str:
    return f"results-{cpu_kind(results['machine'])[0]}.png"


def demote(markdown: str) -> str:
    """One heading level down, so a run's report nests under its CPU kind."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())


def write_report(results: dict, path: Path) -> None:
    """Replaces this CPU kind's section of RESULTS.md (or adds it), keeping the other kinds'."""
    key = cpu_kind(results["machine"])[0]
    body = [header(results)] + [demote(section(s)) for s in results["sections"].values()]
    body.append(f"![results on this CPU kind]({png_name(results)})")
    begin, end = f"<!-- cpu-kind:{key} -->", f"<!-- /cpu-kind:{key} -->"
    mine = f"{begin}\n" + "\n\n".join(body) + f"\n{end}"
    kinds = sections_by_kind(path.read_text() if path.exists() else "")
    kinds[key] = mine
    path.write_text(TITLE + "\n\n" + "\n\n".join(kinds[k] for k in sorted(kinds)) + "\n")


def sections_by_kind(text: str) -> dict[str, str]:
    out, pos = {}, 0
    while (start := text.find("<!-- cpu-kind:", pos)) >= 0:
        key = text[start + len("<!-- cpu-kind:"): text.index(" -->", start)]
        stop = text.index(f"<!-- /cpu-kind:{key} -->", start) + len(f"<!-- /cpu-kind:{key} -->")
        out[key], pos = text[start:stop], stop
    return out
