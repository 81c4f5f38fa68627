"""`make bench`: runs the split stack and the unsplit generate() baseline, writes RESULTS.md and results.png.

    python -m benchmarks.bench            # the full run (float32, then bfloat16), ~12 minutes on 2 cores
    python -m benchmarks.bench --quick    # few repetitions, into benchmarks/out/quick/, for development
    make bench CPU_ISA=avx2               # as on an AVX2-only CPU (its own section of RESULTS.md)
    python -m benchmarks.bench --dtypes q4_1 --out benchmarks/out/q4   # the GGUF's blocks alone (issue 17)
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

from node1.config import Node1Config
from shared.config import ModelSettings
from release.source import DEFAULT_SOURCE, load_source

from benchmarks.machine import describe
from benchmarks.plan import FULL, QUICK, SECOND
from benchmarks.plot import plot
from benchmarks.release_dir import release_dir
from benchmarks.report import png_name, write_report
from benchmarks.stack import bench_env
from benchmarks.suite import run_dtype
from benchmarks import q4
from shared.q4 import kernel as q4_kernel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one or two repetitions and short generations")
    ap.add_argument("--dtypes", default=None,
                    help="comma-separated from float32, bfloat16, q4_1; default float32,bfloat16,q4_1 (quick: float32)")
    ap.add_argument("--threads", type=int, default=1, help="TWINTEE_THREADS for each node (default 1: a core each)")
    ap.add_argument("--out", type=Path, default=None, help="where RESULTS.md and results.png go")
    ap.add_argument("--from-json", type=Path, default=None, help="re-render the report from a saved results.json")
    args = ap.parse_args(argv)
    unknown = set((args.dtypes or "float32").split(",")) - {"float32", "bfloat16", "q4_1"}
    if unknown:
        ap.error(f"--dtypes takes float32, bfloat16 and/or q4_1, not {', '.join(sorted(unknown))}")
    return args


def node1_settings(data_dir: Path, dtypes: list[str], threads: int) -> dict:
    """node1's batching settings as it reads them from the environment the bench gives it, per dtype
    (the pipeline slots' default depends on it)."""
    cfgs = {d: Node1Config.from_env({**os.environ, **bench_env(data_dir, d, threads)}) for d in dtypes}
    return {"pipeline_slots": {d: c.pipeline_slots for d, c in cfgs.items()},
            "max_batch": cfgs[dtypes[0]].model.max_batch}


def measure(args) -> dict:
    dtypes = (args.dtypes or ("float32" if args.quick else "float32,bfloat16,q4_1")).split(",")
    cpu = ModelSettings.from_env(os.environ).cpu  # TWINTEE_CPU_ISA's cap included, as the nodes see it
    if "bfloat16" in dtypes and not cpu.bf16_kernels:
        print(f"skipping bfloat16: the nodes refuse it on this {cpu.isa} CPU (no oneDNN bf16 kernels)", flush=True)
        dtypes.remove("bfloat16")
    t0 = time.perf_counter()
    print("loading the unsplit model ...", flush=True)
    loaded = load_source(DEFAULT_SOURCE)
    q4_dir = q4.release_dir(loaded) if "q4_1" in dtypes else None
    data_dir, how = (release_dir(loaded) if dtypes != ["q4_1"] else (q4_dir, "benchmarks/out/release-q4"))
    split = json.loads((data_dir / "model" / "manifest.json").read_bytes())["body"]["split_layer"]
    results = {"machine": describe(ROOT, args.threads), "release": how, "model_id": loaded[2], "split": split,
               "num_layers": loaded[0].config.num_hidden_layers, "quick": args.quick,
               "node1": node1_settings(data_dir, dtypes, args.threads), "sections": {}}
    for i, dtype in enumerate(dtypes):
        plan = QUICK if args.quick else (FULL if i == 0 else SECOND)
        print(f"== {dtype} ==", flush=True)
        if dtype == "q4_1":
            results["sections"][dtype] = q4_section(loaded, q4_dir, split, plan, args.threads, cpu)
        else:
            results["sections"][dtype] = run_dtype(loaded, data_dir, split, dtype, plan, args.threads, OUT / "logs")
    results["elapsed_s"] = time.perf_counter() - t0
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def q4_section(loaded, data_dir: Path, split: int, plan, threads: int, cpu) -> dict:
    """The same figures for the GGUF's own blocks, plus the kernel per shape against float32's and llama.cpp."""
    isa = q4_kernel.isa_for(cpu.flags)
    with q4.profiling_q4(isa):
        out = run_dtype(loaded, data_dir, split, "q4_1", plan, threads, OUT / "logs")
    out["memory"] = q4.rebase_memory(out["memory"], loaded[0], split)
    print("the q4 kernel against float32's oneDNN path, per shape ...", flush=True)
    out["kernels"] = {"isa": isa, "threads": threads, "rows": q4.kernel_table(isa, threads)}
    out["llama_cpp"] = q4.llama_cpp(loaded[1], os.cpu_count() or 1)
    for line in q4.markdown(out):
        print(line, flush=True)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out or (OUT / "quick" if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = measure(args)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / ("results-quick.json" if args.quick else "results.json")).write_text(json.dumps(results, indent=1))
    write_report(results, out / "RESULTS.md")
    if "q4_1" in results["sections"]:
        q4.add_to_report(out / "RESULTS.md", results)
    plot(results, out / png_name(results))
    print(f"wrote {out / 'RESULTS.md'} and {out / png_name(results)}", flush=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
