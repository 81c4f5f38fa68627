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
UNITS = {  # object -> (source, its own flags)
    # gcc 12's own AVX-512 headers trip -Wuninitialized (_mm512_undefined_*): not ours to fix.
    "kernel_avx512": ("kernel_avx512.cpp", ["-mavx512f", "-mfma", "-mf16c", "-Wno-uninitialized", "-Wno-maybe-uninitialized"]),
    "kernel_avx2": ("kernel_avx2.cpp", ["-mavx2", "-mfma", "-mf16c"]),
    # No contraction: every fused multiply-add is an explicit std::fma, as the vector paths have it.
    "kernel_scalar": ("kernel_scalar.cpp", ["-ffp-contract=off"]),
    # The decode step's norms, rotary and attention, once per ISA: the same C++ and roundings (no
    # contraction, no -mfma), its lane loops as wide as the ISA's vectors; its one OpenMP region runs
    # the step's threads (decode.cpp).
    **{f"decode_{isa}": ("decode.cpp", [*vector, "-ffp-contract=off", "-fopenmp", f"-DDECODE_LAYERS=decode_layers_{isa}"])
       for isa, vector in (("avx512", ["-mavx512f"]), ("avx2", ["-mavx2"]), ("scalar", []))},
    # at::parallel_for is inline: without -fopenmp its `omp parallel` is compiled out and every call
    # ran on the calling thread alone, whatever torch.get_num_threads() said.
    "binding": ("binding.cpp", ["TORCH", "-fopenmp"]),
}
# What an object compiled for an ISA may define as a weak (shared) symbol: nothing of its own code.
# A weak inline function (a std::vector method, say) is kept once for the whole library, maybe the
# AVX-512 unit's copy, which the AVX2 path on a CPU without AVX-512 would then call and die of.
HARMLESS_WEAK = {"DW.ref.__gxx_personality_v0"}
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
    return any(_newer(LIBRARY, HERE / source) for source, _ in UNITS.values())


def build(force: bool = False) -> Path:
    if not force and not stale():
        return LIBRARY
    LIBRARY.parent.mkdir(exist_ok=True)
    tcflags, tlflags = torch_flags()
    objects = []
    for stem, (source, flags) in UNITS.items():
        obj = LIBRARY.parent / (stem + ".o")
        flags = [*tcflags, *flags[1:]] if flags[:1] == ["TORCH"] else flags
        if force or _newer(obj, HERE / source):
            _run(["g++", *COMMON, *flags, "-c", str(HERE / source), "-o", str(obj)])
        if for_an_isa(flags):
            check_no_weak_symbols(obj)
        objects.append(str(obj))
    tmp = LIBRARY.with_suffix(".tmp.so")
    # -fopenmp links libgomp.so.1, which resolves to the copy torch ships (already loaded, rpath): one OpenMP runtime.
    _run(["g++", "-shared", "-fopenmp", *objects, "-o", str(tmp), *tlflags])
    tmp.replace(LIBRARY)  # a running process keeps the library it mapped
    return LIBRARY


def for_an_isa(flags: list[str]) -> bool:
    """Whether a unit is compiled for vector extensions some CPUs lack (its code must stay its own)."""
    return any(f.startswith("-mavx") for f in flags)


def weak_symbols(obj: Path) -> set[str]:
    """The weak symbols an object defines (nm's W and V), by their mangled names."""
    out = subprocess.run(["nm", str(obj)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split()[1:2] in (["W"], ["V"])}


def check_no_weak_symbols(obj: Path) -> None:
    shared = weak_symbols(obj) - HARMLESS_WEAK
    if shared:
        obj.unlink()
        raise SystemExit(f"{obj.name} defines weak symbols another unit may share: {sorted(shared)[:5]}; "
                         "keep such code out of the ISA units (or inline it)")


def _run(cmd: list[str]) -> None:
    print(" ".join(c if len(c) < 60 else c[:57] + "..." for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    print(build(force="--force" in sys.argv))
