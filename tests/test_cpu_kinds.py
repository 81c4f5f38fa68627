"""The CPU-sensitive tests again, as on an AVX2-only CPU: a green suite on one kind means green on both.

The AVX-512 machine re-runs them with oneDNN and MKL capped to AVX2 and TWINTEE_CPU_ISA=avx2 (torch's
own bfloat16 check reads the CPU directly, so only our setting hides those kernels); a node started
that way with bfloat16 refuses in one line.
"""
import os
import subprocess
import sys

import pytest

from shared.cpu import library_caps
from launcher.stack import gunicorn_command
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
CPU_SENSITIVE = ["tests/test_linear.py", "tests/test_model.py", "tests/test_cpu.py"]
AVX2_ENV = {"TWINTEE_CPU_ISA": "avx2", **library_caps("avx2")}


def run_capped(args: list[str], timeout: float, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **AVX2_ENV, **extra, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_cpu_sensitive_tests_pass_as_on_an_avx2_only_cpu():
    out = run_capped([sys.executable, "-m", "pytest", *CPU_SENSITIVE, "-q", "-rs", "-p", "no:cacheprovider"], 900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
    # Only bfloat16 is skipped there, each naming the CPU feature it needs.
    skips = [line for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("avx512bw+avx512vl+avx512dq or avx_ne_convert" in s for s in skips), skips


def test_a_bfloat16_node_on_an_avx2_only_cpu_refuses_to_start_in_one_line(tmp_path):
    env = {"TWINTEE_DTYPE": "bfloat16", "TWINTEE_DATA_DIR": str(tmp_path), "TWINTEE_NODE2_PORT": "5911"}
    out = run_capped(gunicorn_command("node2", env), 120, **env)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    refusals = [line for line in out.stderr.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1 and "TWINTEE_DTYPE=bfloat16" in refusals[0] and "avx512bw" in refusals[0]
    assert "TWINTEE_DTYPE=float32" in refusals[0]
