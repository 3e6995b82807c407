"""Row-major matrix product over a BLAS chosen at import time (see _blas.pyx), callable without the GIL.

BLAS is column-major, and a row-major matrix is the transpose of the same memory read column-major, so the
row-major C = op(A) @ op(B) is the column-major C^T = op(B)^T @ op(A)^T: swap the operands, keep the flags.
Dimensions and leading dimensions are BLAS ints (32-bit); captionkit.kernels checks that they fit.
"""
from cython cimport floating

ctypedef void (*sgemm_t)(char *transa, char *transb, int *m, int *n, int *k, float *alpha, float *a, int *lda,
                         float *b, int *ldb, float *beta, float *c, int *ldc) noexcept nogil
ctypedef void (*dgemm_t)(char *transa, char *transb, int *m, int *n, int *k, double *alpha, double *a, int *lda,
                         double *b, int *ldb, double *beta, double *c, int *ldc) noexcept nogil

cdef sgemm_t sgemm_function() noexcept nogil
cdef dgemm_t dgemm_function() noexcept nogil
cdef bint panel_enabled() noexcept nogil  # whether time loops use _panel.h's products (see use_panel)
cdef bint large_on_panels() noexcept nogil  # whether the other products use them too (see use_panel)


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating *a, int lda, const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """C (m, n), row stride ldc <- alpha * op(A) @ op(B) + beta * C, with op(A) (m, k) and op(B) (k, n).

    A and B are row-major with row strides lda and ldb; op transposes when its flag is set.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm_function()(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda, &beta, c, &ldc)
    else:
        dgemm_function()(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda, &beta, c, &ldc)
