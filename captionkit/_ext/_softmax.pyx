"""The fused output layer: vocabulary scores, masked softmax cross-entropy and their gradients in one call.

Private: call it through captionkit.kernels. Only the positions that count (mask true) are scored: their hidden
states are gathered into a block when some are masked, one product gives their scores, each row is turned into its
softmax gradient in place (no second (rows, V) array), and two products give dh and dW from that same buffer.
"""
import numpy as np
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy

from captionkit._ext._mixed cimport check_bf16, mixed_matmul, short_of_memory
from captionkit._ext._vecmath cimport add, softmax_xent


cdef Py_ssize_t _counted_targets(const int64_t[::1] y, const uint8_t[::1] mask, Py_ssize_t V, str caller) except -1:
    """How many rows the mask keeps; a kept row's target outside [0, V) is a ValueError (a backstop for callers that
    skipped captionkit.kernels: no row may index outside W)."""
    cdef Py_ssize_t r, kept = 0
    for r in range(y.shape[0]):
        if mask[r]:
            if y[r] < 0 or y[r] >= V:
                raise ValueError(f"{caller}: target {y[r]} at row {r} is outside [0, {V})")
            kept += 1
    return kept


def affine_softmax_loss(const floating[:, ::1] h, const floating[:, ::1] W, const floating[::1] b,
                        const int64_t[::1] y, const uint8_t[::1] mask, Py_ssize_t batch,
                        const floating[::1] weight, bint bf16=False):
    """h (R, H) rows of hidden states, W (H, V), b (V,), y (R,) targets in [0, V), mask (R,) 0/1, batch N,
    weight (R,) each row's factor (ones for plain cross-entropy; self-critical training's advantages).

    Returns (loss, dh (R, H), dW (H, V), db (V,)) for loss = sum over rows with mask of
    -weight * log softmax(h W + b)[y], divided by batch (the caller's N, as layers.temporal_softmax_loss divides by
    N rather than by R). With ``bf16`` (float32 only) the three products take their inputs rounded to bfloat16
    (_mixed.pxd); the softmax and the loss stay float32.
    """
    cdef Py_ssize_t R = h.shape[0], H = h.shape[1], V = W.shape[1]
    cdef Py_ssize_t r, i
    if R < 1 or H < 1 or V < 1 or batch < 1 or W.shape[0] != H or b.shape[0] != V or y.shape[0] != R \
            or mask.shape[0] != R or weight.shape[0] != R:
        raise ValueError("affine_softmax_loss: inconsistent or empty shapes")
    cdef floating kind = 0
    check_bf16(bf16, kind, "affine_softmax_loss")
    cdef Py_ssize_t kept = _counted_targets(y, mask, V, "affine_softmax_loss")
    dtype = np.float32 if floating is float else np.float64
    if kept == 0:
        return 0.0, np.zeros((R, H), dtype=dtype), np.zeros((H, V), dtype=dtype), np.zeros(V, dtype=dtype)
    # Masked rows of dh stay zero; when none is masked the product below writes every row.
    dh_arr = np.empty((R, H), dtype=dtype) if kept == R else np.zeros((R, H), dtype=dtype)
    dW_arr = np.empty((H, V), dtype=dtype)
    db_arr = np.zeros(V, dtype=dtype)
    cdef floating[:, ::1] dh = dh_arr, dW = dW_arr
    cdef floating[::1] db = db_arr
    # The rows that count, packed: a view of h itself when nothing is masked.
    rows_arr = np.empty(kept, dtype=np.int64)
    cdef int64_t[::1] rows = rows_arr
    cdef floating[:, ::1] packed, dpacked
    cdef const floating[:, ::1] hk
    if kept == R:
        hk = h
        dpacked = dh
    else:
        packed = np.empty((kept, H), dtype=dtype)
        dpacked = np.empty((kept, H), dtype=dtype)
        hk = packed
    scores_arr = np.empty((kept, V), dtype=dtype)
    cdef floating[:, ::1] scores = scores_arr
    cdef double loss = 0
    cdef floating scale = 1.0 / batch
    cdef size_t row_bytes = H * sizeof(floating)
    cdef bint fits
    with nogil:
        i = 0
        for r in range(R):
            if mask[r]:
                rows[i] = r
                i += 1
        if kept < R:
            for i in range(kept):
                memcpy(&packed[i, 0], &h[rows[i], 0], row_bytes)
        fits = mixed_matmul(bf16, False, False, kept, V, H, &hk[0, 0], H, &W[0, 0], V, False, &scores[0, 0], V)
        for i in range(kept):
            loss += weight[rows[i]] * softmax_xent(&scores[i, 0], &b[0], V, y[rows[i]], scale * weight[rows[i]])
            add(&db[0], &scores[i, 0], V)
        fits = fits and mixed_matmul(bf16, True, False, H, V, kept, &hk[0, 0], H, &scores[0, 0], V, False,
                                     &dW[0, 0], V)
        fits = fits and mixed_matmul(bf16, False, True, kept, H, V, &scores[0, 0], V, &W[0, 0], V, False,
                                     &dpacked[0, 0], H)
        if kept < R:
            for i in range(kept):
                memcpy(&dh[rows[i], 0], &dpacked[i, 0], row_bytes)
    if not fits:
        raise MemoryError(short_of_memory("affine_softmax_loss"))
    return loss / batch, dh_arr, dW_arr, db_arr


def affine_nll(const floating[:, ::1] h, const floating[:, ::1] W, const floating[::1] b, const int64_t[::1] y,
               const uint8_t[::1] mask, Py_ssize_t T, bint bf16=False):
    """h (R, H) rows of hidden states, R = N * T positions of N captions, W (H, V), b (V,), y (R,) targets,
    mask (R,) 0/1 -> nll (N,) float64: for each caption, the sum over its positions with mask of
    -log softmax(h W + b)[y]. The forward half of affine_softmax_loss, without any gradient product; ``bf16`` as
    there."""
    cdef Py_ssize_t R = h.shape[0], H = h.shape[1], V = W.shape[1]
    cdef Py_ssize_t r, i
    if R < 1 or H < 1 or V < 1 or T < 1 or R % T != 0 or W.shape[0] != H or b.shape[0] != V or y.shape[0] != R \
            or mask.shape[0] != R:
        raise ValueError("affine_nll: inconsistent or empty shapes")
    cdef floating kind = 0
    check_bf16(bf16, kind, "affine_nll")
    cdef Py_ssize_t kept = _counted_targets(y, mask, V, "affine_nll")
    nll_arr = np.zeros(R // T, dtype=np.float64)
    if kept == 0:
        return nll_arr
    dtype = np.float32 if floating is float else np.float64
    rows_arr = np.empty(kept, dtype=np.int64)
    packed_arr = np.empty((kept, H), dtype=dtype)
    scores_arr = np.empty((kept, V), dtype=dtype)
    cdef int64_t[::1] rows = rows_arr
    cdef floating[:, ::1] packed = packed_arr, scores = scores_arr
    cdef double[::1] nll = nll_arr
    cdef size_t row_bytes = H * sizeof(floating)
    cdef bint fits
    with nogil:
        i = 0
        for r in range(R):
            if mask[r]:
                rows[i] = r
                memcpy(&packed[i, 0], &h[r, 0], row_bytes)
                i += 1
        fits = mixed_matmul(bf16, False, False, kept, V, H, &packed[0, 0], H, &W[0, 0], V, False, &scores[0, 0], V)
    if not fits:
        raise MemoryError(short_of_memory("affine_nll"))
    with nogil:
        for i in range(kept):
            # With scale 0 the row's gradient, which softmax_xent writes over the scores, is left as zeros.
            nll[rows[i] // T] += softmax_xent(&scores[i, 0], &b[0], V, y[rows[i]], 0)
    return nll_arr
