"""`make load`: the split stack under load on loopback (issue 13 item 10): 32 concurrent clients, a seeded
mix of plain, streamed and dropped greedy requests; zero 5xx, every completed reply equal to its own
single-request output, gauges back to 0 and each worker's RSS at every phase; writes RESULTS.md's Load section.

    python -m benchmarks.load                    # 300 requests, ~5 minutes on 2 cores
    python -m benchmarks.load --requests 40      # a short run for development (RESULTS.md untouched)
    python -m benchmarks.load --port-base 15231  # node2, node1, broker on 15231-15233
"""
import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from launcher.stack import Stack

from benchmarks import load_client, load_probe, scrape
from benchmarks.load_report import write_section
from benchmarks.machine import describe
from benchmarks.release_dir import OWN_RELEASE, ROOT, is_current, release_dir
from benchmarks.report import cpu_kind
from benchmarks.stack import start

HERE = Path(__file__).resolve().parent
# Not the bench's 15201-15204 nor the tests' default 15100 + offsets: both may run beside this.
DEFAULT_PORT_BASE = 15221


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", default="16,32,64,96", help="comma-separated budgets to draw from")
    ap.add_argument("--drop-share", type=float, default=0.15, help="share of streams closed after 2-6 tokens")
    ap.add_argument("--stream-share", type=float, default=0.40, help="share of streams read to the end")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--deadline", type=float, default=900.0, help="seconds after which no new request starts")
    ap.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE, help="node2, node1, broker, step socket on BASE..BASE+3")
    ap.add_argument("--threads", type=int, default=1, help="TWINTEE_THREADS for each node (default 1: a core each)")
    ap.add_argument("--no-report", action="store_true", help="leave RESULTS.md and runs/ alone")
    ap.add_argument("--from-json", type=Path, default=None, help="re-write the Load section from a saved run")
    args = ap.parse_args(argv)
    args.max_tokens = tuple(int(x) for x in args.max_tokens.split(","))
    if args.drop_share + args.stream_share > 1 or min(args.drop_share, args.stream_share) < 0:
        ap.error("--drop-share and --stream-share must be shares that add up to at most 1")
    return args


def stack_env(data_dir: Path, base: int, threads: int) -> dict:
    node2, node1, broker, step = base, base + 1, base + 2, base + 3
    for port in (node2, node1, broker, step):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is taken (a load run left running?); choose another --port-base")
    return {"TWINTEE_NODE2_PORT": str(node2), "TWINTEE_NODE1_PORT": str(node1), "TWINTEE_BROKER_PORT": str(broker),
            "TWINTEE_NODE2_STEP_PORT": str(step), "TWINTEE_NODE2_URL": f"http://127.0.0.1:{node2}", "TWINTEE_BROKER_URL": f"http://127.0.0.1:{broker}",
            "TWINTEE_DATA_DIR": str(data_dir), "TWINTEE_THREADS": str(threads)}


def the_release() -> tuple[Path, str]:
    """The bench's choice of release; the unsplit model is loaded only when a release must be written."""
    if is_current(ROOT / "data") or (OWN_RELEASE / "model" / "manifest.json").exists():
        return release_dir(None)
    from release.source import DEFAULT_SOURCE, load_source
    return release_dir(load_source(DEFAULT_SOURCE))


def phase(results: dict, stack, name: str, **figures) -> None:
    results["phases"].append({"phase": name, "rss": load_probe.rss(stack), **figures})
    rss = ", ".join(f"{r} {load_probe.mib(b)}" for r, b in results["phases"][-1]["rss"].items())
    print(f"[{name}] RSS {rss} {json.dumps(figures) if figures else ''}", flush=True)


def measure(args, stack) -> dict:
    url = stack.url("node1")
    jobs = load_client.plan(args.requests, args.max_tokens, args.drop_share, args.stream_share, args.seed)
    results = {"args": {k: v for k, v in vars(args).items()}, "phases": []}
    phase(results, stack, "loaded")
    t0 = time.perf_counter()
    refs = load_client.references(url, stack.auth, jobs)
    phase(results, stack, "references", requests=len(refs), seconds=round(time.perf_counter() - t0, 1))
    before = scrape.snapshot(url)
    wall, outcomes = load_client.run_mix(url, stack.auth, jobs, args.clients, args.deadline)
    verdict = load_client.judge(outcomes, refs)
    phase(results, stack, "load", seconds=round(wall, 1))
    served = scrape.diff(scrape.snapshot(url), before)
    results["node1_statuses"] = {k.split("status=")[1].rstrip("}"): int(v) for k, v in served.items()
                                 if k.startswith("twintee_requests_total{endpoint=/generate") and v}
    results["gauges"] = load_probe.settled_gauges(stack)
    results["gauges_nonzero"] = load_probe.nonzero(results["gauges"])
    phase(results, stack, "settled")
    results.update(verdict=verdict.as_dict(), wall_s=wall, not_started=len(jobs) - len(outcomes),
                   requests_per_s=len(outcomes) / wall, tokens_per_s=verdict.tokens / wall,
                   completion_seconds=sorted(round(o.seconds, 2) for o in outcomes if o.job.mode != "drop"))
    return results


def passed(r: dict) -> bool:
    v = r["verdict"]
    return not (v["server_errors"] or v["failures"] or v["mismatches"] or r["gauges_nonzero"] or r["not_started"])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        write_section(json.loads(args.from_json.read_text()), HERE / "RESULTS.md")
        return 0
    data_dir, how = the_release()
    log_dir = HERE / "out" / "load-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    machine = describe(ROOT, args.threads)
    stack = Stack(stack_env(data_dir, args.port_base, args.threads), log_dir)
    t0 = time.perf_counter()
    try:
        start(stack)
        results = measure(args, stack)
    finally:
        stack.stop()
    results.update(machine=machine, release=how, elapsed_s=time.perf_counter() - t0,
                   load_average_end=[round(x, 2) for x in os.getloadavg()], passed=passed(results))
    v = results["verdict"]
    print(f"{v['requests']} requests in {results['wall_s']:.1f} s: {results['requests_per_s']:.2f} req/s, "
          f"{results['tokens_per_s']:.1f} tokens/s; statuses {v['statuses']}; completed {v['completed']}, "
          f"dropped {v['dropped']}, failures {len(v['failures'])}, mismatches {len(v['mismatches'])}, "
          f"5xx {v['server_errors']} (503s by the client's previous request: {v['refused_after']}); gauges not back to 0: {results['gauges_nonzero'] or 'none'}", flush=True)
    for kind in ("failures", "mismatches"):
        for item in v[kind][:5]:
            print(f"{kind[:-1]}: {json.dumps(item)[:300]}", flush=True)
    if not args.no_report:
        runs = HERE / "runs" / f"load-{cpu_kind(machine)[0]}.json"
        runs.write_text(json.dumps(results, indent=1))
        write_section(results, HERE / "RESULTS.md")
        print(f"wrote {runs} and the Load section of {HERE / 'RESULTS.md'}", flush=True)
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
