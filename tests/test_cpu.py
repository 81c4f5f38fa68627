"""The CPU's vector extensions, the AVX2 cap, and the one-line refusal of a dtype without kernels."""
import os

import pytest

from node2.config import Node2Config
from shared.config import ConfigError, ModelSettings
from shared.cpu import AVX2_ONLY, OPENMP_ENV, CpuFeatures, UnsupportedCpu, library_caps, read_cpu, vector_flags

XEON = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512dq amx_bf16 aes\n"
EPYC_AVX2 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c aes\n"  # issue 10's machine
CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def cpu_from(text: str, tmp_path, isa="native") -> CpuFeatures:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return read_cpu(isa, path)


def test_only_vector_flags_are_kept(tmp_path):
    cpu = cpu_from(XEON, tmp_path)
    assert "fpu" not in cpu.flags and "aes" not in cpu.flags and {"avx512bw", "amx_bf16"} <= cpu.flags
    assert (cpu.isa, cpu.bf16_kernels) == ("avx512", True)


def test_the_avx2_cap_sees_what_an_avx2_only_epyc_sees(tmp_path):
    capped, epyc = cpu_from(XEON, tmp_path, "avx2"), cpu_from(EPYC_AVX2, tmp_path)
    assert capped.flags == epyc.flags and capped.flags <= AVX2_ONLY
    assert (capped.isa, capped.bf16_kernels, epyc.bf16_kernels) == ("avx2", False, False)


def test_avx_ne_convert_alone_gives_bf16_kernels():
    assert CpuFeatures(frozenset({"avx", "avx2", "fma", "avx_ne_convert"})).bf16_kernels


def test_bfloat16_is_refused_in_one_line_naming_the_feature_and_the_way_out(tmp_path):
    with pytest.raises(UnsupportedCpu) as err:
        cpu_from(EPYC_AVX2, tmp_path).require("bfloat16")
    message = str(err.value)
    assert "\n" not in message and "bfloat16" in message and "avx512bw" in message
    assert "avx_ne_convert" in message and "TWINTEE_DTYPE=float32" in message
    cpu_from(EPYC_AVX2, tmp_path).require("float32")  # float32 runs everywhere


def test_a_node_config_refuses_bfloat16_on_a_capped_cpu():
    with pytest.raises(ConfigError, match="bfloat16 needs oneDNN"):
        Node2Config.from_env({"TWINTEE_CPU_ISA": "avx2", "TWINTEE_DTYPE": "bfloat16", **CAPS})
    assert Node2Config.from_env({"TWINTEE_CPU_ISA": "avx2", **CAPS}).model.cpu.isa == "avx2"


def test_the_cap_needs_the_libraries_caps_in_the_starting_environment():
    # They are read when oneDNN and MKL load: a node cannot set them for itself once running.
    with pytest.raises(ConfigError, match="ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2"):
        ModelSettings.from_env({"TWINTEE_CPU_ISA": "avx2"})
    with pytest.raises(ConfigError, match="TWINTEE_CPU_ISA"):
        ModelSettings.from_env({"TWINTEE_CPU_ISA": "sse2"})
    assert library_caps("avx2") == CAPS and library_caps("native") == {}


def test_cpuinfo_without_flags_assumes_nothing():
    assert vector_flags("processor : 0\n") == frozenset()
    assert CpuFeatures(frozenset()).isa == "baseline"


def test_the_nodes_start_with_idle_openmp_threads_sleeping_after_a_short_spin():
    # Spinning OpenMP threads took node1's master's core on a busy machine (issue 17): every stack the
    # launcher, the tests and the benchmark start sets the passive policy with a bounded spin (libgomp's
    # GOMP_SPINCOUNT overrides the policy's count of 0), unless told otherwise.
    from launcher.stack import Stack

    assert OPENMP_ENV == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "4000"}
    assert Stack({}).env["OMP_WAIT_POLICY"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    assert Stack({}).env["GOMP_SPINCOUNT"] == os.environ.get("GOMP_SPINCOUNT", "4000")
    assert Stack({"OMP_WAIT_POLICY": "ACTIVE"}).env["OMP_WAIT_POLICY"] == "ACTIVE"
