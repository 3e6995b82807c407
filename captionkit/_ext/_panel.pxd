"""The packed-panel products of _panel.h (see that file for the layout and why it exists), with BLAS behind them.

Two entry points for the kernels' matrix products: ``product`` for a time step's few rows against a matrix packed
once per sequence (``packed_copy``), and ``matmul`` for every other product, which goes to BLAS, or to the panels
when the bound BLAS runs narrower vector kernels than the panels (_blas.pyx's ``large_on_panels``).
"""
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from captionkit._ext._blas cimport gemm, large_on_panels


cdef extern from "_panel.h" nogil:
    bint ck_panel_available()
    Py_ssize_t ck_packed_size_f(Py_ssize_t k, Py_ssize_t n)
    Py_ssize_t ck_packed_size_d(Py_ssize_t k, Py_ssize_t n)
    void ck_pack_f(Py_ssize_t k, Py_ssize_t n, const float *b, Py_ssize_t ldb, bint trans, float *bp)
    void ck_pack_d(Py_ssize_t k, Py_ssize_t n, const double *b, Py_ssize_t ldb, bint trans, double *bp)
    void ck_panel_gemm_f(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda, bint trans_a,
                         float *bp, float *c, Py_ssize_t ldc)
    void ck_panel_gemm_d(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double *a, Py_ssize_t lda, bint trans_a,
                         double *bp, double *c, Py_ssize_t ldc)


# Fused-type front ends. The first argument only selects the precision.

cdef inline Py_ssize_t packed_size(floating kind, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Elements of the packed form of a (k, n) matrix."""
    if floating is float:
        return ck_packed_size_f(k, n)
    else:
        return ck_packed_size_d(k, n)


cdef inline void pack(Py_ssize_t k, Py_ssize_t n, const floating *b, Py_ssize_t ldb, bint trans,
                      floating *bp) noexcept nogil:
    """Pack B (k, n), or B given as its transpose (n, k) when trans is set, into bp."""
    if floating is float:
        ck_pack_f(k, n, b, ldb, trans, bp)
    else:
        ck_pack_d(k, n, b, ldb, trans, bp)


cdef inline void panel_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a, Py_ssize_t lda,
                            bint trans_a, floating *bp, floating *c, Py_ssize_t ldc) noexcept nogil:
    """C (m, n) += op(A) (m, k) @ B, B packed by pack() into bp (whose tail the product uses as work space); with
    trans_a, A is given as its transpose (k, m)."""
    if floating is float:
        ck_panel_gemm_f(m, n, k, a, lda, trans_a, bp, c, ldc)
    else:
        ck_panel_gemm_d(m, n, k, a, lda, trans_a, bp, c, ldc)


cdef inline floating *packed_copy(const floating *b, Py_ssize_t k, Py_ssize_t n, Py_ssize_t ldb,
                                  bint trans) noexcept nogil:
    """B (k, n), or B given as its transpose when trans is set, packed into a new buffer that the caller frees;
    NULL when memory is short, and the caller then multiplies with BLAS instead."""
    cdef floating kind = 0
    cdef floating *bp = <floating *> malloc(packed_size(kind, k, n) * sizeof(floating))
    if bp != NULL:
        pack(k, n, b, ldb, trans, bp)
    return bp


cdef inline void product(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a, Py_ssize_t lda,
                         const floating *b, bint trans, floating *packed, floating *c, Py_ssize_t ldc) noexcept nogil:
    """C (m, n) += A (m, k) @ op(B), where op(B) is B (k, n) or, with trans, the transpose of B (n, k); both
    row-major and contiguous. On packed panels when ``packed`` holds op(B) (packed_copy), else on BLAS."""
    if packed != NULL:
        panel_gemm(m, n, k, a, lda, False, packed, c, ldc)
    else:
        gemm(False, trans, m, n, k, 1, a, lda, b, k if trans else n, 1, c, ldc)


cdef inline void matmul(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a,
                        Py_ssize_t lda, const floating *b, Py_ssize_t ldb, bint accumulate, floating *c,
                        Py_ssize_t ldc) noexcept nogil:
    """C (m, n) = op(A) @ op(B) (+ C when accumulate), op(A) (m, k), op(B) (k, n), each row-major with its row
    stride, op transposing when its flag is set. On the panels when large_on_panels(), else on BLAS."""
    cdef floating *packed = NULL
    cdef Py_ssize_t r
    if large_on_panels():
        packed = packed_copy(b, k, n, ldb, trans_b)
    if packed == NULL:
        gemm(trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, 1 if accumulate else 0, c, ldc)
        return
    if not accumulate:
        for r in range(m):
            memset(c + r * ldc, 0, n * sizeof(floating))
    panel_gemm(m, n, k, a, lda, trans_a, packed, c, ldc)
    free(packed)
