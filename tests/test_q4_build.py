"""The q4 library's build (shared/q4/build.py): one decode unit per ISA, none sharing its code."""
import subprocess

import pytest

from shared.q4 import build


def test_each_isa_has_its_own_decode_unit_with_the_same_roundings():
    decode = {stem: flags for stem, (source, flags) in build.UNITS.items() if source == "decode.cpp"}
    assert set(decode) == {"decode_avx512", "decode_avx2", "decode_scalar"}
    for stem, flags in decode.items():
        assert "-ffp-contract=off" in flags and "-mfma" not in flags  # two roundings a multiply-add, everywhere
        assert f"-DDECODE_LAYERS=decode_layers_{stem.removeprefix('decode_')}" in flags


def test_an_isa_unit_with_a_weak_symbol_is_refused(tmp_path):
    src = tmp_path / "unit.cpp"
    # An inline function whose address escapes: emitted as a weak symbol the linker keeps once.
    src.write_text("inline float twice(float x) { return 2 * x; }\nfloat (*escape)(float) = twice;\n")
    obj = tmp_path / "unit.o"
    subprocess.run(["g++", "-O2", "-mavx2", "-c", str(src), "-o", str(obj)], check=True)
    assert build.weak_symbols(obj) - build.HARMLESS_WEAK
    with pytest.raises(SystemExit, match="weak symbols"):
        build.check_no_weak_symbols(obj)
    assert not obj.exists()  # a later build compiles it again rather than linking the refused object


def test_the_built_isa_units_define_no_shared_code():
    build.build()
    checked = {stem for stem, (_, flags) in build.UNITS.items() if build.for_an_isa(flags)}
    assert checked == {"kernel_avx512", "kernel_avx2", "decode_avx512", "decode_avx2"}
    for stem in checked:
        assert build.weak_symbols(build.LIBRARY.parent / f"{stem}.o") <= build.HARMLESS_WEAK
