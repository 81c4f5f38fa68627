"""Builds the q4 kernel library (`make kernels`, run by `make setup`) with the machine's g++.

One translation unit per ISA, each compiled for its own vector extensions, so one library holds
all three paths and `shared.q4.kernel` picks one at run time from the CPU's flags (shared/cpu.py).
Only the glue includes torch's headers (the slow part, ~40 s); the kernels include none.
"""
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIBRARY = HERE / "build" / "twintee_q4.so"
HEADERS = [HERE / "lanes.h", HERE / "decode.h", HERE / "panel.h"]
UNITS = {  # source -> its own flags
    # gcc 12's own AVX-512 headers trip -Wuninitialized (_mm512_undefined_*): not ours to fix.
    "kernel_avx512.cpp": ["-mavx512f", "-mfma", "-mf16c", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
    "kernel_avx2.cpp": ["-mavx2", "-mfma", "-mf16c"],
    # No contraction: every fused multiply-add is an explicit std::fma, as the vector paths have it.
    "kernel_scalar.cpp": ["-ffp-contract=off"],
    # The decode step's norms, rotary and attention: plain C++, the same roundings on every CPU; its
    # one OpenMP region runs the step's threads (decode.cpp).
    "decode.cpp": ["-ffp-contract=off", "-fopenmp"],
    # at::parallel_for is inline: without -fopenmp its `omp parallel` is compiled out and every call
    # ran on the calling thread alone, whatever torch.get_num_threads() said.
    "binding.cpp": ["TORCH", "-fopenmp"],
}
COMMON = ["-O3", "-std=c++20", "-fPIC", "-fvisibility=hidden", "-Wall"]


def torch_flags() -> tuple[list[str], list[str]]:
    """-> (compile flags, link flags) for code that includes torch's headers."""
    import torch
    from torch.utils.cpp_extension import include_paths, library_paths

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cflags = [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}",
                                                     f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    lib = library_paths()[0]
    return cflags, [f"-L{lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{lib}"]


def _newer(target: Path, source: Path) -> bool:
    """Whether `target` must be rebuilt from `source` (or the shared header, or this script's flags)."""
    if not target.exists():
        return True
    return any(p.stat().st_mtime > target.stat().st_mtime for p in (source, *HEADERS, Path(__file__)))


def stale() -> bool:
    return any(_newer(LIBRARY, HERE / s) for s in UNITS)


def build(force: bool = False) -> Path:
    if not force and not stale():
        return LIBRARY
    LIBRARY.parent.mkdir(exist_ok=True)
    tcflags, tlflags = torch_flags()
    objects = []
    for source, flags in UNITS.items():
        obj = LIBRARY.parent / (Path(source).stem + ".o")
        flags = [*tcflags, *flags[1:]] if flags[:1] == ["TORCH"] else flags
        if force or _newer(obj, HERE / source):
            _run(["g++", *COMMON, *flags, "-c", str(HERE / source), "-o", str(obj)])
        objects.append(str(obj))
    tmp = LIBRARY.with_suffix(".tmp.so")
    # -fopenmp links libgomp.so.1, which resolves to the copy torch ships (already loaded, rpath): one OpenMP runtime.
    _run(["g++", "-shared", "-fopenmp", *objects, "-o", str(tmp), *tlflags])
    tmp.replace(LIBRARY)  # a running process keeps the library it mapped
    return LIBRARY


def _run(cmd: list[str]) -> None:
    print(" ".join(c if len(c) < 60 else c[:57] + "..." for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    print(build(force="--force" in sys.argv))
