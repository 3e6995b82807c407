"""A product at the precision the caller asks for, the one place the compiled modules choose it: float32 (or float64)
on _panel.pxd's panels or BLAS, or, with ``bf16`` set, inputs rounded to bfloat16 and float32 sums (_bf16.pxd).

bf16 applies to float32 only; the modules refuse bf16 with float64 arrays, and every bf16 entry point checks
bf16_available() at its Python boundary, so an instruction the CPU lacks is never reached.
"""
from cython cimport floating
from libc.stdint cimport uint16_t, uint32_t

from captionkit._ext._bf16 cimport bf16_available, bf16_gemm, bf16_matmul, bf16_packed_copy, bf16_work
from captionkit._ext._panel cimport matmul, product


cdef inline bint mixed_matmul(bint bf16, bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                              const floating *a, Py_ssize_t lda, const floating *b, Py_ssize_t ldb,
                              bint accumulate, floating *c, Py_ssize_t ldc) noexcept nogil:
    """_panel.pxd's matmul, or with bf16 its bfloat16 form; False (C untouched) when bf16's buffers do not fit in
    memory, and the caller raises MemoryError."""
    if floating is float:
        if bf16:
            return bf16_matmul(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc)
    matmul(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc)
    return True


cdef inline void mixed_product(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a, Py_ssize_t lda,
                               const floating *b, bint trans, floating *packed, const uint16_t *bf16_packed,
                               uint32_t *work, floating *c, Py_ssize_t ldc) noexcept nogil:
    """A time step's C (m, n) += A (m, k) @ op(B) on a matrix packed once per call: as bfloat16 when
    ``bf16_packed`` holds op(B) (bf16_packed_copy; ``work`` from bf16_work for m rows and depth k), else as
    _panel.pxd's product (on ``packed``, or BLAS when it is NULL)."""
    if floating is float:
        if bf16_packed != NULL:
            bf16_gemm(m, n, k, a, lda, False, bf16_packed, work, True, c, ldc)
            return
    product(m, n, k, a, lda, b, trans, packed, c, ldc)


cdef inline uint16_t *mixed_packed_copy(bint bf16, const floating *b, Py_ssize_t k, Py_ssize_t n, Py_ssize_t ldb,
                                        bint trans) noexcept nogil:
    """With bf16 (float32 only), B (k, n) or B given as its transpose rounded and packed into a new buffer for
    mixed_product, which the caller frees (NULL when memory is short); without, NULL."""
    if floating is float:
        if bf16:
            return bf16_packed_copy(b, k, n, ldb, trans)
    return NULL


cdef inline int check_bf16(bint bf16, floating kind, str name) except -1:
    """Refuses bf16 for float64 arrays, and on a CPU without AVX512-BF16, naming the function."""
    if bf16:
        if floating is double:
            raise ValueError(f"{name}: bfloat16 products take float32 arrays, got float64")
        elif not bf16_available():
            raise RuntimeError(f"{name}: bfloat16 products need AVX512-BF16 (vdpbf16ps), which this CPU or its OS "
                               "does not offer")
    return 0


cdef inline str short_of_memory(str name):
    """The MemoryError message when a bfloat16 product's buffers do not fit."""
    return f"{name}: not enough memory for the bfloat16 copies of its matrices"
