"""What this CPU offers the compiled kernels, and which product kernels captionkit runs on it (`captionkit info`).

An instruction set counts only when the CPU has it and the OS saves its registers: AVX2 needs the AVX state in XCR0,
AVX-512 the opmask and ZMM states besides, AMX the tile states and, on Linux, a kernel that grants tile data to a
process that asks (arch_prctl(ARCH_REQ_XCOMP_PERM); this probe only asks whether the kernel would grant it, and the
bf16 products ask for it when they first run, ``_ext/_bf16.h``). The answers come from CPUID and XGETBV through the
compiled probe (``_ext/_cpu.pyx``); without the compiled extension they come from /proc/cpuinfo's flags, where Linux
lists only what it enables, and elsewhere they are unknown.
"""
import sys
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["CpuFeatures", "ProductKernels", "cpu_features", "cpuinfo_flags", "product_kernels"]

# (leaf, subleaf, register index, bit) of each feature in CPUID
_CPUID_BITS = {
    "avx2": (7, 0, 1, 5),
    "avx512f": (7, 0, 1, 16),
    "avx512_bf16": (7, 1, 0, 5),
    "amx_tile": (7, 0, 3, 24),
    "amx_bf16": (7, 0, 3, 22),
}
_XCR0_AVX = 0b110  # SSE and AVX state
_XCR0_AVX512 = 0b1110_0000  # opmask, upper halves of ZMM0-15, ZMM16-31
_XCR0_AMX = 0b11 << 17  # tile configuration and tile data
_XFEATURE_TILE_DATA = 1 << 18
_CPUINFO_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16"}


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction sets a program may run here (each True only when the OS enables it too), and how that was
    found out (``source``: "cpuid", "/proc/cpuinfo" or "unknown", when every answer is False)."""
    name: str
    avx2: bool
    avx512f: bool
    avx512_bf16: bool
    amx_bf16: bool
    source: str
    amx_in_cpu: bool = False  # the CPU has AMX-BF16, whether or not the OS lets a process use it

    def describe(self):
        """One line: each instruction set and whether it runs here."""
        def mark(flag):
            return "yes" if flag else "no"
        amx = mark(self.amx_bf16)
        if self.amx_in_cpu and not self.amx_bf16:
            amx = "no (the CPU has it, the OS does not grant the tile state)"
        return (f"AVX2 {mark(self.avx2)}, AVX-512F {mark(self.avx512f)}, AVX512-BF16 {mark(self.avx512_bf16)}, "
                f"AMX-BF16 {amx}")


def _from_cpuid(probe):
    def has(feature):
        leaf, subleaf, register, bit = _CPUID_BITS[feature]
        top = probe.cpuid(0)
        regs = probe.cpuid(leaf, subleaf) if top is not None and top[0] >= leaf else None
        return regs is not None and bool(regs[register] >> bit & 1)

    xcr0 = probe.xcr0()
    avx_os = xcr0 & _XCR0_AVX == _XCR0_AVX
    avx512_os = avx_os and xcr0 & _XCR0_AVX512 == _XCR0_AVX512
    amx_in_cpu = has("amx_tile") and has("amx_bf16")
    # Linux enables the tile state in XCR0 yet hands it out per process: its answer decides, where it gives one.
    linux = sys.platform.startswith("linux")
    amx_os = xcr0 & _XCR0_AMX == _XCR0_AMX and (not linux or bool(probe.os_xcomp_supported() & _XFEATURE_TILE_DATA))
    return CpuFeatures(name=probe.brand() or "unknown x86-64 CPU", avx2=has("avx2") and avx_os,
                       avx512f=has("avx512f") and avx512_os, avx512_bf16=has("avx512_bf16") and avx512_os,
                       amx_bf16=amx_in_cpu and amx_os, source="cpuid", amx_in_cpu=amx_in_cpu)


def cpuinfo_flags(path="/proc/cpuinfo"):
    """(model name, set of flags) of the first processor in a /proc/cpuinfo file; None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    name, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    return None if flags is None else (name or "unknown CPU", flags)


def _from_cpuinfo():
    found = cpuinfo_flags()
    if found is None:
        return CpuFeatures(name="unknown CPU", avx2=False, avx512f=False, avx512_bf16=False, amx_bf16=False,
                           source="unknown")
    name, flags = found
    has = {feature: flag in flags for feature, flag in _CPUINFO_FLAGS.items()}
    return CpuFeatures(name=name, **has, source="/proc/cpuinfo", amx_in_cpu=has["amx_bf16"])


@lru_cache(maxsize=1)
def cpu_features():
    """The :class:`CpuFeatures` of this machine (asked once per process)."""
    try:
        from captionkit._ext import _cpu
    except ImportError:  # no compiled extension: what Linux says it enabled
        return _from_cpuinfo()
    if not _cpu.is_x86():
        return CpuFeatures(name="not an x86-64 CPU", avx2=False, avx512f=False, avx512_bf16=False, amx_bf16=False,
                           source="cpuid")
    return _from_cpuid(_cpu)


@dataclass(frozen=True)
class ProductKernels:
    """Where the compiled kernels' matrix products run: ``step`` (a time loop's few-row products) and ``large``
    (every other float32 product) are "panels" (captionkit's packed AVX-512 kernels) or "BLAS"; ``blas`` names
    the kernels' BLAS and its kernel set; ``bf16`` whether the bfloat16 product kernel runs here, and why not."""
    step: str
    large: str
    blas: str
    bf16: bool
    bf16_reason: str


def product_kernels():
    """The :class:`ProductKernels` of this process; None when the compiled extension is not built."""
    try:
        from captionkit._ext import _bf16, _blas
    except ImportError:
        return None
    step, large = _blas.panel_use()
    features = cpu_features()
    described = {"amx": "AMX tiles (tdpbf16ps)", "vdpbf16ps": "vdpbf16ps (AVX512-BF16)"}
    if _bf16.available():
        others = [described[name] for name in _bf16.kernels() if name != _bf16.kernel()]
        reason = f"{described[_bf16.kernel()]} on packed panels" + (f"; {others[0]} also runs" if others else "")
    elif not features.avx512_bf16:
        reason = "this CPU (or its OS) lacks AVX512-BF16"
    else:
        reason = "this build's compiler could not target AVX512-BF16"
    return ProductKernels(step="panels" if step else "BLAS", large="panels" if large else "BLAS",
                          blas=_blas.description(), bf16=bool(_bf16.available()), bf16_reason=reason)
