"""Fused in-place optimiser updates (private: see captionkit.kernels.adam_update)."""
from cython cimport floating

from captionkit._ext._vecmath cimport adam


def adam_update(floating[::1] w, const floating[::1] dw, floating[::1] m, floating[::1] v, double learning_rate,
                double beta1, double beta2, double epsilon, double c1, double c2):
    """One Adam step over flat arrays of one length, in place on w, m and v (c1, c2: bias corrections)."""
    cdef Py_ssize_t n = w.shape[0]
    if n < 1 or dw.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("adam_update: arrays of different or zero lengths")
    with nogil:
        adam(&w[0], &dw[0], &m[0], &v[0], n, <floating> learning_rate, <floating> beta1, <floating> beta2,
             <floating> epsilon, <floating> c1, <floating> c2)
