"""Writes the load run's figures into RESULTS.md as its "Load" section, leaving the bench's sections alone."""
import time
from pathlib import Path

from benchmarks.load_client import PROMPTS
from benchmarks.load_probe import mib
from benchmarks.report import cpu_kind, table

# `make bench` rewrites RESULTS.md keeping every block fenced by these markers (report.sections_by_kind),
# so the Load section survives a bench run under the same fence, with a key that is no CPU kind's.
BEGIN, END = "<!-- cpu-kind:load -->", "<!-- /cpu-kind:load -->"


def section(r: dict) -> str:
    a, v, m = r["args"], r["verdict"], r["machine"]
    rss_rows = [[p["phase"], *(mib(p["rss"][role]) for role in ("node1", "node2")),
                 ", ".join(f"{k} {x}" for k, x in p.items() if k not in ("phase", "rss"))] for p in r["phases"]]
    g = r["gauges"]
    gauge_rows = [[role, *(g[role].get(name, "missing") for name in
                           ("twintee_active_sessions", "twintee_batch_size", "twintee_kv_cache_bytes",
                            "health.batch", "health.sessions"))] for role in ("node1", "node2")]
    waits = r["completion_seconds"]
    p50, p95 = (waits[len(waits) // 2], waits[int(len(waits) * 0.95)]) if waits else (0, 0)
    verdict = "**passed**" if r["passed"] else "**FAILED**"
    return f"""{BEGIN}
## Load

Reproduce with **`make load`** (`python -m benchmarks.load`; raw figures of the last run in
`benchmarks/runs/load-{cpu_kind(m)[0]}.json`). Written {time.strftime('%Y-%m-%d %H:%M', time.localtime())} from revision
{m['revision']} on {m['cores']} cores ({m['cpu']}), each node with `TWINTEE_THREADS={a['threads']}`; the run took
{r['elapsed_s'] / 60:.1f} minutes; load average when it ended {' / '.join(str(x) for x in r['load_average_end'])}.
The release used: {r['release']}.

A real stack (broker, node2, node1 under gunicorn, sealing on) on loopback ports {a['port_base']}-{a['port_base'] + 2}.
{a['clients']} clients, each on its own connection, take {a['requests']} greedy (`temperature: 0`) `POST /generate`
requests from one seeded plan (seed {a['seed']}): {len(PROMPTS)} distinct prompts, `max_tokens` drawn from
{', '.join(map(str, a['max_tokens']))}; {a['drop_share']:.0%} streams closed by the client after 2-6 tokens,
{a['stream_share']:.0%} streams read to the end, the rest plain JSON. Before the load, each distinct (prompt, max_tokens)
ran alone, one at a time, on the same stack: that is the reference every completed reply must equal.

Verdict: {verdict}.

| requests | by mode | HTTP statuses (client) | node1's /generate statuses | 5xx | completed = reference | mismatches | failed | dropped by the client | not started by the deadline |
|---|---|---|---|---|---|---|---|---|---|
| {v['requests']} | {_kv(v['by_mode'])} | {_kv(v['statuses'])} | {_kv(r['node1_statuses'])} | {v['server_errors']} | {v['completed']} | {len(v['mismatches'])} | {len(v['failures'])} | {v['dropped']} | {r['not_started']} |

| wall s | requests/s (all answers) | requests/s served (200) | tokens/s (received by clients) | seconds per request p50 / p95 (not dropped) |
|---|---|---|---|---|
| {r['wall_s']:.1f} | {r['requests_per_s']:.2f} | {int(v['statuses'].get('200', 0)) / r['wall_s']:.2f} | {r['tokens_per_s']:.1f} | {p50} / {p95} |

Each node's gunicorn worker, resident memory at the end of each phase (`settled`: after the gauges read 0):

{table(["phase", "node1 RSS", "node2 RSS", "figures"], rss_rows)}

Gauges after the load (/metrics, and /health's counts):

{table(["node", "active_sessions", "batch_size", "kv_cache_bytes", "/health batch", "/health sessions"], gauge_rows)}
{_not_zero(r)}
{_refusals(v)}
{END}"""


def _kv(d: dict) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(d.items())) or "none"


def _not_zero(r: dict) -> str:
    if not r["gauges_nonzero"]:
        return "\nEvery gauge read 0 once the load had ended."
    return "\n**Not back to 0 after 30 s:** " + ", ".join(f"{k} = {v}" for k, v in r["gauges_nonzero"].items()) + "."


def _refusals(v: dict) -> str:
    if not v.get("refused_after"):
        return ""
    return ("\n503s by what the same client's previous request was and got (mode/status; a refused client "
            "waits its Retry-After, at most 5 s, before its next request): " + _kv(v["refused_after"]) + ".")


def write_section(results: dict, path: Path) -> None:
    """Replaces the Load section of RESULTS.md, or appends it after the CPU kinds' sections."""
    text = path.read_text() if path.exists() else ""
    mine = section(results)
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + mine + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + mine + "\n"
    path.write_text(text)
