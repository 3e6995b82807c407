"""captionkit.cpu: the instruction sets from CPUID and XCR0 (against what Linux lists in /proc/cpuinfo, and against
fake CPUs whose OS withholds a register state), the /proc/cpuinfo reader, and where the products run."""
import sys

import pytest

from captionkit import cpu, kernels

LINUX_CPUINFO = "/proc/cpuinfo"


def _compiled_probe():
    try:
        from captionkit._ext import _cpu
    except ImportError:
        pytest.skip("the compiled extension is not built")
    return _cpu


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo is Linux's")
def test_cpuid_agrees_with_what_linux_lists():
    probe = _compiled_probe()
    if not probe.is_x86():
        pytest.skip("not an x86-64 CPU")
    found = cpu.cpuinfo_flags(LINUX_CPUINFO)
    assert found is not None
    _, flags = found
    features = cpu._from_cpuid(probe)
    assert features.source == "cpuid"
    assert features.avx2 == ("avx2" in flags)
    assert features.avx512f == ("avx512f" in flags)
    assert features.avx512_bf16 == ("avx512_bf16" in flags)
    assert features.amx_in_cpu == ("amx_bf16" in flags and "amx_tile" in flags)
    assert cpu.cpu_features() == features


class FakeProbe:
    """A CPU with every feature of _CPUID_BITS set, and an OS that saves the state ``xcr0`` says."""

    def __init__(self, xcr0, xcomp=1 << 18, max_leaf=7):
        self._xcr0, self._xcomp, self._max_leaf = xcr0, xcomp, max_leaf

    def cpuid(self, leaf, subleaf=0):
        if leaf == 0:
            return (self._max_leaf, 0, 0, 0)
        if leaf > self._max_leaf:
            return None
        return (0xFFFFFFFF,) * 4

    def xcr0(self):
        return self._xcr0

    def os_xcomp_supported(self):
        return self._xcomp

    def brand(self):
        return "Fake CPU"


ALL_STATE = 0b11 << 17 | 0b1110_0111


def test_every_feature_counts_when_the_os_saves_its_state():
    f = cpu._from_cpuid(FakeProbe(ALL_STATE))
    assert (f.name, f.avx2, f.avx512f, f.avx512_bf16, f.amx_bf16) == ("Fake CPU", True, True, True, True)


def test_avx512_does_not_count_when_the_os_does_not_save_the_zmm_state():
    f = cpu._from_cpuid(FakeProbe(0b111))
    assert f.avx2 and not f.avx512f and not f.avx512_bf16 and not f.amx_bf16


def test_nothing_counts_without_xsave():
    f = cpu._from_cpuid(FakeProbe(0))
    assert not (f.avx2 or f.avx512f or f.avx512_bf16 or f.amx_bf16)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tile-data grant is Linux's")
def test_amx_needs_a_linux_kernel_that_grants_tile_data():
    f = cpu._from_cpuid(FakeProbe(ALL_STATE, xcomp=0))
    assert f.amx_in_cpu and not f.amx_bf16 and f.avx512_bf16
    assert "AMX-BF16 no (the CPU has it, the OS does not grant the tile state)" in f.describe()


def test_a_cpu_without_leaf_7_has_none_of_them():
    f = cpu._from_cpuid(FakeProbe(ALL_STATE, max_leaf=1))
    assert not (f.avx2 or f.avx512f or f.avx512_bf16 or f.amx_in_cpu)
    assert f.describe() == "AVX2 no, AVX-512F no, AVX512-BF16 no, AMX-BF16 no"


def test_cpuinfo_reader(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f\n\n"
                    "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    assert cpu.cpuinfo_flags(path) == ("Some CPU", {"fpu", "avx2", "avx512f"})
    path.write_text("processor\t: 0\n")
    assert cpu.cpuinfo_flags(path) is None
    assert cpu.cpuinfo_flags(tmp_path / "missing") is None


def test_where_the_products_run_is_what_the_kernels_use():
    _compiled_probe()
    from captionkit._ext import _blas

    report = cpu.product_kernels()
    step, large = _blas.panel_use()
    assert (report.step, report.large) == ("panels" if step else "BLAS", "panels" if large else "BLAS")
    assert report.blas == kernels.blas()
    assert report.bf16 == kernels.bf16_available()
    assert report.bf16 == cpu.cpu_features().avx512_bf16  # GCC's answer and CPUID's agree
