"""Decoding steps: vocabulary scores of hidden states, then the best word (greedy) or the k best (beam search).

Sampling draws one word per row from the softmax by inverse transform of a given uniform number, in O(V) per row.

Private: call these through captionkit.kernels. The scores live in one (N, V) buffer that the selection reads in
place; nothing of size V is returned except what was asked for. With ``bf16`` (float32 only) each function's
product takes its inputs rounded to bfloat16 (_mixed.pxd); the scores are float32 all the same.
"""
import numpy as np
from cython cimport floating
from libc.math cimport exp, log
from libc.stdint cimport int64_t

from captionkit._ext._mixed cimport check_bf16, mixed_matmul, short_of_memory
from captionkit._ext._vecmath cimport argmax_bias, topk_log_softmax


def affine_argmax(const floating[:, ::1] h, const floating[:, ::1] W, const floating[::1] b, bint bf16=False):
    """h (N, H), W (H, V), b (V,) -> (N,) int64: argmax over v of h @ W + b, row by row."""
    cdef Py_ssize_t N = h.shape[0], H = h.shape[1], V = W.shape[1], n
    if N < 1 or H < 1 or V < 1 or W.shape[0] != H or b.shape[0] != V:
        raise ValueError("affine_argmax: inconsistent or empty shapes")
    cdef floating kind = 0
    check_bf16(bf16, kind, "affine_argmax")
    cdef bint fits
    scores_arr = np.empty((N, V), dtype=np.float32 if floating is float else np.float64)
    best_arr = np.empty(N, dtype=np.int64)
    cdef floating[:, ::1] scores = scores_arr
    cdef int64_t[::1] best = best_arr
    with nogil:
        fits = mixed_matmul(bf16, False, False, N, V, H, &h[0, 0], H, &W[0, 0], V, False, &scores[0, 0], V)
    if not fits:
        raise MemoryError(short_of_memory("affine_argmax"))
    with nogil:
        for n in range(N):
            best[n] = argmax_bias(&scores[n, 0], &b[0], V)
    return best_arr


def affine_log_softmax_topk(const floating[:, ::1] h, const floating[:, ::1] W, const floating[::1] b,
                            Py_ssize_t k, bint bf16=False):
    """h (N, H), W (H, V), b (V,), k in [1, V] -> (logp (N, k), ids (N, k) int64).

    Row n holds the k best words of h[n] @ W + b, best first (ties: lower id first; k = 1 is affine_argmax's word),
    with their log-probabilities log softmax(h[n] @ W + b).
    """
    cdef Py_ssize_t N = h.shape[0], H = h.shape[1], V = W.shape[1], n
    if N < 1 or H < 1 or V < 1 or W.shape[0] != H or b.shape[0] != V or k < 1 or k > V:
        raise ValueError("affine_log_softmax_topk: inconsistent or empty shapes, or k outside [1, V]")
    cdef floating kind = 0
    check_bf16(bf16, kind, "affine_log_softmax_topk")
    cdef bint fits
    dtype = np.float32 if floating is float else np.float64
    scores_arr = np.empty((N, V), dtype=dtype)
    vals_arr = np.empty((N, k), dtype=dtype)
    ids_arr = np.empty((N, k), dtype=np.int64)
    cdef floating[:, ::1] scores = scores_arr, vals = vals_arr
    cdef int64_t[:, ::1] ids = ids_arr
    with nogil:
        fits = mixed_matmul(bf16, False, False, N, V, H, &h[0, 0], H, &W[0, 0], V, False, &scores[0, 0], V)
    if not fits:
        raise MemoryError(short_of_memory("affine_log_softmax_topk"))
    with nogil:
        for n in range(N):
            topk_log_softmax(&scores[n, 0], &b[0], V, k, &vals[n, 0], &ids[n, 0])
    return vals_arr, ids_arr


def affine_sample(const floating[:, ::1] h, const floating[:, ::1] W, const floating[::1] b,
                  const double[::1] uniforms, double temperature, bint bf16=False):
    """h (N, H), W (H, V), b (V,), uniforms (N,) in [0, 1), temperature > 0 -> (ids (N,) int64, logp (N,) float64).

    Row n's word is the first v whose cumulative probability, p = softmax((h[n] @ W + b) / temperature) summed over
    0..v, exceeds uniforms[n] (the last word when rounding leaves none); logp is log p of that word.
    """
    cdef Py_ssize_t N = h.shape[0], H = h.shape[1], V = W.shape[1], n, v
    if N < 1 or H < 1 or V < 1 or W.shape[0] != H or b.shape[0] != V or uniforms.shape[0] != N \
            or not temperature > 0:
        raise ValueError("affine_sample: inconsistent or empty shapes, or a temperature that is not positive")
    cdef floating kind = 0
    check_bf16(bf16, kind, "affine_sample")
    cdef bint fits
    scores_arr = np.empty((N, V), dtype=np.float32 if floating is float else np.float64)
    ids_arr = np.empty(N, dtype=np.int64)
    logp_arr = np.empty(N, dtype=np.float64)
    cdef floating[:, ::1] scores = scores_arr
    cdef int64_t[::1] ids = ids_arr
    cdef double[::1] logp = logp_arr
    cdef double top, total, target, running, inverse = 1.0 / temperature
    with nogil:
        fits = mixed_matmul(bf16, False, False, N, V, H, &h[0, 0], H, &W[0, 0], V, False, &scores[0, 0], V)
    if not fits:
        raise MemoryError(short_of_memory("affine_sample"))
    with nogil:
        for n in range(N):
            top = -1e308
            for v in range(V):
                scores[n, v] = (scores[n, v] + b[v]) * inverse
                if scores[n, v] > top:
                    top = scores[n, v]
            total = 0
            for v in range(V):
                scores[n, v] = exp(scores[n, v] - top)
                total += scores[n, v]
            target, running, ids[n] = uniforms[n] * total, 0, V - 1
            for v in range(V):
                running += scores[n, v]
                if running > target:
                    ids[n] = v
                    break
            logp[n] = log(scores[n, ids[n]] / total)
    return ids_arr, logp_arr
