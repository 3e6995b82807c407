"""Word-embedding lookup and its gradient, a scatter-add in C (no np.add.at).

Private: call these through captionkit.kernels, which checks shapes and that every id is in [0, V).
"""
import numpy as np
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from captionkit._ext._vecmath cimport add


def embedding_forward(const int64_t[::1] ids, const floating[:, ::1] W):
    """ids (M,) in [0, V), W (V, D) -> rows (M, D) = W[ids]."""
    cdef Py_ssize_t M = ids.shape[0], V = W.shape[0], D = W.shape[1], i
    _check_ids(ids, V, M, D)
    out_arr = np.empty((M, D), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] out = out_arr
    with nogil:
        for i in range(M):
            memcpy(&out[i, 0], &W[ids[i], 0], D * sizeof(floating))
    return out_arr


def embedding_backward(const int64_t[::1] ids, const floating[:, ::1] dout, Py_ssize_t V):
    """ids (M,) in [0, V), dout (M, D) -> dW (V, D), where row v sums the rows of dout whose id is v."""
    cdef Py_ssize_t M = ids.shape[0], D = dout.shape[1], i
    if dout.shape[0] != M:
        raise ValueError("embedding_backward: ids and dout disagree on the number of rows")
    _check_ids(ids, V, M, D)
    dW_arr = np.zeros((V, D), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] dW = dW_arr
    with nogil:
        for i in range(M):
            add(&dW[ids[i], 0], &dout[i, 0], D)
    return dW_arr


cdef _check_ids(const int64_t[::1] ids, Py_ssize_t V, Py_ssize_t M, Py_ssize_t D):
    """Backstop for callers that skipped captionkit.kernels: never index outside W."""
    cdef Py_ssize_t i
    if M < 1 or D < 1 or V < 1:
        raise ValueError("embedding: empty ids or rows")
    for i in range(M):
        if ids[i] < 0 or ids[i] >= V:
            raise ValueError(f"embedding: id {ids[i]} at position {i} is outside [0, {V})")
