"""bfloat16 matrix products on AVX512-BF16 or AMX: both inputs rounded to bfloat16 (round to nearest even, as
:func:`captionkit.precision.round_to_bf16`), products and sums in float32, which is torch.autocast's product.

The product runs in captionkit's packed-panel layout (``_ext/_bf16.h``) on one of two kernels, the same for every
product of the process: AMX tiles (``tdpbf16ps``) where the CPU has AMX-BF16, else ``vdpbf16ps`` (AVX512-BF16);
:func:`bf16_kernels` lists what this CPU runs and :func:`use_bf16_kernel` switches. :func:`bf16_pack` rounds and
packs the right-hand matrix once, so a matrix used by many products (a weight, between two updates) is rounded
once. Both instructions treat inputs below 2**-126 in magnitude as zero and flush such results to zero. On a CPU
without AVX512-BF16 every function but :func:`bf16_available` and :func:`bf16_kernels` raises RuntimeError saying
so; the numpy emulation of the same product is :func:`captionkit.precision.bf16_matmul_reference`.
"""
import numpy as np

from captionkit.kernels._built import _require_built, is_available
from captionkit.kernels._checks import _check_size, _float_array
from captionkit.precision import check_precision

if is_available():  # else every kernel stops at _require_built()
    from captionkit._ext import _bf16

__all__ = ["BF16_KERNELS", "bf16_available", "bf16_kernel", "bf16_kernels", "bf16_matmul", "bf16_pack",
           "use_bf16_kernel"]

# Every bfloat16 product kernel captionkit has, fastest first (bf16_kernels() gives those this CPU runs).
BF16_KERNELS = ("amx", "vdpbf16ps")


def bf16_available():
    """True when the compiled kernels are built and this CPU (and its OS) run AVX512-BF16."""
    return is_available() and _bf16.available()


def bf16_kernels():
    """The bfloat16 product kernels this CPU runs, the default first: ``"amx"`` (AMX-BF16 tiles) and
    ``"vdpbf16ps"`` (AVX512-BF16); empty where it runs neither."""
    return _bf16.kernels() if is_available() else ()


def bf16_kernel():
    """The kernel every bfloat16 product of this process runs (see :func:`bf16_kernels`), or None."""
    return _bf16.kernel() if is_available() else None


def use_bf16_kernel(name):
    """Run every bfloat16 product of this process on the kernel ``name`` (one of :func:`bf16_kernels`) from now
    on, to compare the two on a CPU with AMX; not while products run. ValueError for a name that is no kernel,
    RuntimeError for one this CPU does not run."""
    _require_built()
    _bf16.use(name)


def _require_bf16():
    _require_built()
    if not _bf16.available():
        raise RuntimeError("bfloat16 products need AVX512-BF16 (the vdpbf16ps instruction), which this CPU or its "
                           "OS does not offer; `captionkit info` lists what it has")


def _bf16_products(precision, dtype):
    """Whether a kernel's products run in bfloat16: False for ``precision`` "fp32", True for "bf16" (which needs
    float32 arrays and a CPU with AVX512-BF16); ValueError or RuntimeError saying which is missing."""
    if check_precision(precision, dtype) == "fp32":
        return False
    _require_bf16()
    return True


def _float32_matrix(name, a):
    a = _float_array(name, a, 2)
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32 (bfloat16 products round float32 inputs), got dtype {a.dtype}")
    return a


def bf16_pack(b, trans=False):
    """The float32 matrix B (k, n), or B given as its transpose (n, k) when ``trans``, rounded to bfloat16 and
    packed for :func:`bf16_matmul` (an opaque object with ``depth`` k and ``columns`` n)."""
    _require_bf16()
    return _bf16.pack(_float32_matrix("b", b), bool(trans))


def bf16_matmul(a, b, trans_a=False, trans_b=False):
    """op(A) @ op(B) with both rounded to bfloat16 and float32 sums -> float32 (m, n).

    ``a`` is float32 (m, k), or its transpose (k, m) with ``trans_a``; ``b`` is float32 (k, n), or its transpose
    (n, k) with ``trans_b``, or a matrix packed by :func:`bf16_pack` (which already says how it was given, so
    ``trans_b`` must then be False). All arrays C-contiguous, no dimension 0.
    """
    _require_bf16()
    a = _float32_matrix("a", a)
    if isinstance(b, _bf16.PackedMatrix):
        if trans_b:
            raise ValueError("trans_b must be False for a packed b: bf16_pack(b, trans=...) decided its orientation")
        packed = b
    else:
        packed = _bf16.pack(_float32_matrix("b", b), bool(trans_b))
    m, k = a.shape[::-1] if trans_a else a.shape
    if k != packed.depth:
        raise ValueError(f"op(a) has shape ({m}, {k}) but op(b) has {packed.depth} rows: their depths must match")
    _check_size("out", (m, packed.columns))
    return _bf16.multiply(a, packed, bool(trans_a))
