"""bfloat16 products for other compiled modules (the engine cimports these, as sklearn's modules cimport its
_cython_blas.pxd): C (m, n) += op(A) @ B with inputs rounded to bfloat16 and float32 sums, on AVX512-BF16; see
_bf16.h for the packed layout. Call nothing but bf16_available() unless it returns true.
"""
from libc.stdint cimport uint16_t, uint32_t
from libc.stdlib cimport free, malloc

cdef bint bf16_available() noexcept nogil  # this CPU, its OS and the compiler have AVX512-BF16
cdef Py_ssize_t bf16_packed_size(Py_ssize_t k, Py_ssize_t n) noexcept nogil  # uint16 elements of a packed (k, n)
cdef Py_ssize_t bf16_work_size(Py_ssize_t m, Py_ssize_t k) noexcept nogil  # uint32 elements of a product's work space
# B (k, n), or B given as its transpose (n, k) when trans is set, rounded and packed into bp.
cdef void bf16_pack(Py_ssize_t k, Py_ssize_t n, const float *b, Py_ssize_t ldb, bint trans,
                    uint16_t *bp) noexcept nogil
# C (m, n) = op(A) (m, k) @ B packed in bp, plus C's own values with accumulate; with trans_a, A is given as its
# transpose (k, m). bp is only read, so threads may share it; each needs its own work space.
cdef void bf16_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda, bint trans_a,
                    const uint16_t *bp, uint32_t *work, bint accumulate, float *c, Py_ssize_t ldc) noexcept nogil


cdef inline uint16_t *bf16_packed_copy(const float *b, Py_ssize_t k, Py_ssize_t n, Py_ssize_t ldb,
                                       bint trans) noexcept nogil:
    """B (k, n), or B given as its transpose when trans is set, rounded and packed into a new buffer that the
    caller frees; NULL when memory is short."""
    cdef uint16_t *bp = <uint16_t *> malloc(bf16_packed_size(k, n) * sizeof(uint16_t))
    if bp != NULL:
        bf16_pack(k, n, b, ldb, trans, bp)
    return bp


cdef inline uint32_t *bf16_work(Py_ssize_t m, Py_ssize_t k) noexcept nogil:
    """A new work space (freed by the caller) for products of up to m rows and depth k; NULL when memory is short."""
    return <uint32_t *> malloc(bf16_work_size(m, k) * sizeof(uint32_t))


cdef inline bint bf16_matmul(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a,
                             Py_ssize_t lda, const float *b, Py_ssize_t ldb, bint accumulate, float *c,
                             Py_ssize_t ldc) noexcept nogil:
    """C (m, n) = op(A) @ op(B) (+ C when accumulate) with both rounded to bfloat16, as _panel.pxd's matmul takes
    its arguments; B is rounded and packed for this one product. False, with C untouched, when memory is short."""
    cdef uint16_t *bp = bf16_packed_copy(b, k, n, ldb, trans_b)
    cdef uint32_t *work = bf16_work(m, k)
    cdef bint ok = bp != NULL and work != NULL
    if ok:
        bf16_gemm(m, n, k, a, lda, trans_a, bp, work, accumulate, c, ldc)
    free(bp)
    free(work)
    return ok
