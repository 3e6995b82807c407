"""bfloat16 products (_bf16.h): the functions other compiled modules cimport (_bf16.pxd), and a Python entry for
tests and benchmarks that checks what it is given, so that no shape or layout reaches the C code unchecked.

captionkit.kernels.bf16_matmul is the public, documented form of the Python entry.
"""
import numpy as np

from libc.stdint cimport uint16_t, uint32_t
from libc.stdlib cimport free, malloc


cdef extern from "_bf16.h" nogil:
    bint ck_bf16_available()
    int CK_BF16_VDPBF16PS, CK_BF16_AMX
    bint ck_bf16_kernel_available(int kernel)
    bint ck_bf16_use(int kernel)
    int ck_bf16_kernel_in_use()
    Py_ssize_t ck_bf16_packed_size(Py_ssize_t k, Py_ssize_t n)
    Py_ssize_t ck_bf16_work_size(Py_ssize_t m, Py_ssize_t k)
    uint16_t ck_bf16_round(float x)
    void ck_bf16_pack(Py_ssize_t k, Py_ssize_t n, const float *b, Py_ssize_t ldb, bint trans, uint16_t *bp)
    void ck_bf16_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda, bint trans_a,
                      const uint16_t *bp, uint32_t *work, bint accumulate, float *c, Py_ssize_t ldc)


cdef bint bf16_available() noexcept nogil:
    return ck_bf16_available()


cdef Py_ssize_t bf16_packed_size(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    return ck_bf16_packed_size(k, n)


cdef Py_ssize_t bf16_work_size(Py_ssize_t m, Py_ssize_t k) noexcept nogil:
    return ck_bf16_work_size(m, k)


cdef void bf16_pack(Py_ssize_t k, Py_ssize_t n, const float *b, Py_ssize_t ldb, bint trans,
                    uint16_t *bp) noexcept nogil:
    ck_bf16_pack(k, n, b, ldb, trans, bp)


cdef void bf16_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda, bint trans_a,
                    const uint16_t *bp, uint32_t *work, bint accumulate, float *c, Py_ssize_t ldc) noexcept nogil:
    ck_bf16_gemm(m, n, k, a, lda, trans_a, bp, work, accumulate, c, ldc)


def available():
    """Whether this CPU, its OS and the build have AVX512-BF16 (vdpbf16ps), which every product here needs."""
    return ck_bf16_available()


# The product kernels by name, fastest first: the order in which a process picks its default.
_KERNELS = {"amx": CK_BF16_AMX, "vdpbf16ps": CK_BF16_VDPBF16PS}
ck_bf16_kernel_in_use()  # chosen at import, under the GIL, not by whichever threads multiply first


def kernels():
    """The names of the product kernels this CPU runs, the default (fastest) first: "amx" (AMX tiles, tdpbf16ps)
    and "vdpbf16ps" (AVX512-BF16)."""
    return tuple(name for name, kernel in _KERNELS.items() if ck_bf16_kernel_available(kernel))


def kernel():
    """The name of the kernel every bfloat16 product of this process runs, or None when this CPU runs none."""
    cdef int chosen = ck_bf16_kernel_in_use()
    return next((name for name, kernel in _KERNELS.items() if kernel == chosen), None)


def use(str name):
    """Run every bfloat16 product of this process on the kernel ``name`` from now on (not while products run)."""
    if name not in _KERNELS:
        raise ValueError(f"unknown bfloat16 kernel {name!r}: choose from {', '.join(_KERNELS)}")
    if not ck_bf16_use(_KERNELS[name]):
        raise RuntimeError(f"the bfloat16 kernel {name!r} does not run on this CPU (or its OS): "
                           f"it runs {', '.join(kernels()) or 'none'}")


def _require():
    if not ck_bf16_available():
        raise RuntimeError("bfloat16 products need AVX512-BF16 (vdpbf16ps), which this CPU (or its OS, or this "
                           "build's compiler) does not offer")


def _nonempty(name, shape):
    if 0 in shape:
        raise ValueError(f"{name} has an empty dimension: shape {tuple(shape)}")


def round_bits(const float[::1] x not None):
    """The kernel's own rounding of a float32 vector: its bfloat16 patterns (uint16), as the products see them."""
    bits = np.empty(x.shape[0], np.uint16)
    cdef uint16_t[::1] out = bits
    cdef Py_ssize_t i
    with nogil:
        for i in range(x.shape[0]):
            out[i] = ck_bf16_round(x[i])
    return bits


cdef class PackedMatrix:
    """A float32 matrix B (depth x columns) rounded to bfloat16 and packed for bf16 products (made by pack())."""
    cdef readonly Py_ssize_t depth, columns
    cdef readonly object panels  # the uint16 buffer, owned here

    def __repr__(self):
        return f"PackedMatrix(depth={self.depth}, columns={self.columns})"


def pack(const float[:, ::1] b not None, bint trans=False):
    """B (k, n), or B given as its transpose (n, k) when ``trans``, rounded to bfloat16 and packed."""
    _require()
    _nonempty("b", (b.shape[0], b.shape[1]))
    cdef Py_ssize_t k = b.shape[1] if trans else b.shape[0]
    cdef Py_ssize_t n = b.shape[0] if trans else b.shape[1]
    cdef PackedMatrix packed = PackedMatrix.__new__(PackedMatrix)
    packed.depth, packed.columns = k, n
    packed.panels = np.empty(ck_bf16_packed_size(k, n), np.uint16)
    cdef uint16_t[::1] panels = packed.panels
    with nogil:
        ck_bf16_pack(k, n, &b[0, 0], b.shape[1], trans, &panels[0])
    return packed


def multiply(const float[:, ::1] a not None, PackedMatrix packed not None, bint trans_a=False):
    """op(A) @ B as a new float32 (m, n) array, B packed by pack(); op(A) is A (m, k), or with ``trans_a`` the
    transpose of the A given (k, m). The GIL is released while it multiplies."""
    _require()
    _nonempty("a", (a.shape[0], a.shape[1]))
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    if k != packed.depth:
        side = "rows" if trans_a else "columns"
        raise ValueError(f"a has {k} {side} but the packed matrix has depth {packed.depth}: op(a) @ b needs them equal")
    c = np.empty((m, packed.columns), np.float32)  # written whole: the product does not add C's values
    cdef float[:, ::1] out = c
    cdef const uint16_t[::1] panels = packed.panels
    cdef uint32_t *work = <uint32_t *> malloc(ck_bf16_work_size(m, k) * sizeof(uint32_t))
    if work == NULL:
        raise MemoryError(f"work space of a bfloat16 product of depth {k}")
    with nogil:
        ck_bf16_gemm(m, packed.columns, k, &a[0, 0], a.shape[1], trans_a, &panels[0], work, False, &out[0, 0],
                     packed.columns)
    free(work)
    return c
