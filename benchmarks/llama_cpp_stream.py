"""llama.cpp's single stream on the GGUF the release reads, in a process of its own (issue 17's yardstick).

    python -m benchmarks.llama_cpp_stream --threads 2 --tokens 128 --ids 1,2,3   # prints one JSON line

Its own process because llama-cpp-python is a compiled library we do not own: a build whose kernels crash
on this CPU (0.3.36 built with -march=native on an AMX Xeon segfaulted in ggml_backend_amx_mul_mat) must
cost the bench one figure, not the run.
"""
import argparse
import json
import time
from statistics import median

from llama_cpp import Llama

from release.source import SMOLLM2_GGUF, smollm2_dir


def tokens_per_second(ids: list[int], threads: int, tokens: int, repeats: int = 3) -> float:
    """Greedy decode rate after the first token (prefill excluded), the median of `repeats` runs."""
    llm = Llama(model_path=str(smollm2_dir() / SMOLLM2_GGUF), n_ctx=2048, n_threads=threads,
                n_threads_batch=threads, n_batch=512, verbose=False)
    rates = []
    for _ in range(repeats):
        llm.reset()
        first, n = None, 0
        for _ in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            n += 1
            first = first or time.perf_counter()
            if n == tokens:
                break
        rates.append((n - 1) / (time.perf_counter() - first))
    return median(rates)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--ids", required=True, help="the prompt's token ids, comma-separated")
    args = ap.parse_args(argv)
    ids = [int(i) for i in args.ids.split(",")]
    print(json.dumps({"threads": args.threads, "tokens": args.tokens,
                      "tps": tokens_per_second(ids, args.threads, args.tokens)}))


if __name__ == "__main__":
    main()
