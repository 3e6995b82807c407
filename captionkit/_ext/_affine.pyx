"""Affine layer forward and backward over the kernels' BLAS or packed panels (private: see captionkit.kernels).

The model's projections run here rather than through numpy's matmul: numpy carries a BLAS of its own, and keeping
every product of a compiled training step on the kernels' one (captionkit._ext._panel.matmul chooses between its
OpenBLAS and the packed panels) keeps two thread pools from competing.
"""
import numpy as np
from cython cimport floating

from captionkit._ext._mixed cimport check_bf16, mixed_matmul, short_of_memory
from captionkit._ext._vecmath cimport add


def affine_forward(const floating[:, ::1] x, const floating[:, ::1] W, const floating[::1] b, bint bf16=False):
    """x (N, D), W (D, M), b (M,) -> x @ W + b (N, M); with ``bf16`` (float32 only) the product takes its inputs
    rounded to bfloat16 (_mixed.pxd)."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], n
    if N < 1 or D < 1 or M < 1 or W.shape[0] != D or b.shape[0] != M:
        raise ValueError("affine_forward: inconsistent or empty shapes")
    cdef floating kind = 0
    check_bf16(bf16, kind, "affine_forward")
    cdef bint fits
    out_arr = np.empty((N, M), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] out = out_arr
    with nogil:
        fits = mixed_matmul(bf16, False, False, N, M, D, &x[0, 0], D, &W[0, 0], M, False, &out[0, 0], M)
        for n in range(N):
            add(&out[n, 0], &b[0], M)
    if not fits:
        raise MemoryError(short_of_memory("affine_forward"))
    return out_arr


def affine_backward(const floating[:, ::1] dout, const floating[:, ::1] x, const floating[:, ::1] W,
                    bint input_grad, bint bf16=False):
    """dout (N, M), x (N, D), W (D, M) -> (dx (N, D) or None when not input_grad, dW (D, M), db (M,)); ``bf16`` as
    for affine_forward."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], n
    if N < 1 or D < 1 or M < 1 or W.shape[0] != D or dout.shape[0] != N or dout.shape[1] != M:
        raise ValueError("affine_backward: inconsistent or empty shapes")
    cdef floating kind = 0
    check_bf16(bf16, kind, "affine_backward")
    cdef bint fits
    dtype = np.float32 if floating is float else np.float64
    dW_arr = np.empty((D, M), dtype=dtype)
    db_arr = np.zeros(M, dtype=dtype)
    cdef floating[:, ::1] dW = dW_arr, dx
    cdef floating[::1] db = db_arr
    dx_arr = None
    if input_grad:
        dx_arr = np.empty((N, D), dtype=dtype)
        dx = dx_arr
    with nogil:
        fits = mixed_matmul(bf16, True, False, D, M, N, &x[0, 0], D, &dout[0, 0], M, False, &dW[0, 0], M)
        for n in range(N):
            add(&db[0], &dout[n, 0], M)
        if input_grad:
            fits = fits and mixed_matmul(bf16, False, True, N, D, M, &dout[0, 0], M, &W[0, 0], M, False, &dx[0, 0], D)
    if not fits:
        raise MemoryError(short_of_memory("affine_backward"))
    return dx_arr, dW_arr, db_arr
