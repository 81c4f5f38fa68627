"""shared/memory.py: a step's activations reuse the heap's pages, and a session's KV cache goes back to
the OS when the session ends while others stay open. Each check runs in a fresh interpreter: malloc's
settings are process-wide and set once, as each node sets them at start."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


SETUP = """
import json, resource, torch
from shared import memory
memory.return_freed_memory()
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
"""


def test_a_steps_activations_reuse_the_pages_the_last_step_freed():
    # 5 MB, a 428-token prefill's gate|up output. With every block over 1 MiB mapped afresh (the old
    # setting) each of the 10 steps faulted its 1,280 pages in again: ~12,800 faults.
    got = run(SETUP + """
for _ in range(20):  # the heap settles after a few steps (glibc places the first few elsewhere)
    torch.empty(428, 3072).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(428, 3072).fill_(1.0)
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
""")
    assert got["faults"] < 1_000, got


def test_a_sessions_cache_goes_back_to_the_os_while_other_sessions_stay_open():
    # Ten 8 MB caches, each followed by a small block of a session that stays: from the heap, the
    # freed caches would sit between live blocks where no trim of the heap's top reaches them.
    got = run(SETUP + """
from shared.kv import SessionCache
from shared.spec import ModelSpec
spec = ModelSpec("llama", num_layers=30, hidden=576, heads=9, kv_heads=3, head_dim=64, intermediate=1536,
                 vocab=49152, eps=1e-5, rope_theta=1e5, max_positions=8192, attention_bias=False,
                 tie_embeddings=True, sliding_window=None)
base = rss_mib()
caches, staying = [], []
for _ in range(10):
    c = SessionCache(spec, 15, 1166, torch.float32)  # 15 layers x 3 heads x 1166 x 64 x 4 B = 13.4 MB a pair
    c.k.fill_(1.0), c.v.fill_(1.0)
    caches.append(c)
    staying.append(torch.ones(2000))
full = rss_mib()
del caches, c
print(json.dumps({"added": full - base, "left": rss_mib() - base}))
""")
    assert got["added"] > 100, got  # the caches were really touched
    assert got["left"] < 20, got
