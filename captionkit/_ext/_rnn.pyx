"""Vanilla RNN sequence forward/backward and single step, with the time loop in C.

Private: call these through captionkit.kernels, which checks dtypes, shapes, contiguity and sizes first. Work that
does not depend on the recurrence is taken out of the loop into single large products: x @ Wx for every step at once
before the forward loop; dx, dWx, dWh and db after the backward loop. Inside the loops only h @ Wh (and its
transpose) remains, one product per step on strided row blocks, so no step copies data. On CPUs with AVX-512 that
product runs on Wh packed once per call (_panel.h) instead of BLAS, which would repack Wh at every step.
"""
import numpy as np
from cython cimport floating
from libc.string cimport memcpy, memset

from captionkit._ext._blas cimport gemm
from captionkit._ext._panel cimport ck_panel_available, pack, packed_size, panel_gemm
from captionkit._ext._vecmath cimport add, tanh_bias, tanh_grad


cdef bint _use_panel = ck_panel_available()


def use_panel(bint flag):
    """Run the per-step products on packed panels (when the CPU allows) or on BLAS; returns the previous choice.

    For tests and benchmarks, which compare the two paths.
    """
    global _use_panel
    previous = _use_panel
    _use_panel = flag and ck_panel_available()
    return previous


cdef inline void step_product(Py_ssize_t m, Py_ssize_t H, const floating *a, Py_ssize_t lda, const floating *W,
                              bint trans, floating *packed, floating *c, Py_ssize_t ldc) noexcept nogil:
    """c (m, H) += a (m, H) @ op(W): packed (when not NULL) holds op(W) packed, else BLAS multiplies W itself."""
    if packed != NULL:
        panel_gemm(m, H, H, a, lda, packed, c, ldc)
    else:
        gemm(False, trans, m, H, H, 1, a, lda, W, H, 1, c, ldc)


cdef object packed_recurrent(const floating[:, ::1] Wh, bint trans):
    """op(Wh) packed for step_product, or None for the BLAS path."""
    if not _use_panel:
        return None
    cdef Py_ssize_t H = Wh.shape[0]
    cdef floating kind = 0
    buffer = np.empty(packed_size(kind, H, H), dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] view = buffer
    with nogil:
        pack(H, H, &Wh[0, 0], H, trans, &view[0])
    return buffer


cdef inline floating *address(floating[::1] packed) noexcept:
    """Start of a packed buffer, or NULL for None."""
    return NULL if packed is None else &packed[0]


def rnn_forward(const floating[:, :, ::1] x, const floating[:, ::1] h0, const floating[:, ::1] Wx,
                const floating[:, ::1] Wh, const floating[::1] b):
    """x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,) -> h (N, T, H) hidden states."""
    cdef Py_ssize_t N = x.shape[0], T = x.shape[1], D = x.shape[2], H = h0.shape[1]
    if N < 1 or T < 1 or D < 1 or H < 1 or h0.shape[0] != N or Wx.shape[0] != D or Wx.shape[1] != H \
            or Wh.shape[0] != H or Wh.shape[1] != H or b.shape[0] != H:
        raise ValueError("rnn_forward: inconsistent or empty shapes")
    h_arr = np.empty((N, T, H), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, ::1] h = h_arr
    cdef Py_ssize_t t, n
    cdef const floating *prev
    cdef int ld_prev
    cdef floating[::1] packed_Wh = packed_recurrent(Wh, False)
    cdef floating *packed = address(packed_Wh)
    with nogil:
        # Input projections of all N*T positions in one product, written where the hidden states go.
        gemm(False, False, N * T, H, D, 1, &x[0, 0, 0], D, &Wx[0, 0], H, 0, &h[0, 0, 0], H)
        for t in range(T):
            if t == 0:
                prev, ld_prev = &h0[0, 0], H
            else:
                prev, ld_prev = &h[0, t - 1, 0], T * H
            # Step t of every sequence: rows h[:, t] sit T*H apart.
            step_product(N, H, prev, ld_prev, &Wh[0, 0], False, packed, &h[0, t, 0], T * H)
            for n in range(N):
                tanh_bias(&h[n, t, 0], &b[0], H)
    return h_arr


def rnn_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x, const floating[:, ::1] h0,
                 const floating[:, ::1] Wx, const floating[:, ::1] Wh, const floating[:, :, ::1] h):
    """Backward of rnn_forward given its inputs and output h -> dx, dh0, dWx, dWh, db."""
    cdef Py_ssize_t N = x.shape[0], T = x.shape[1], D = x.shape[2], H = h0.shape[1]
    if N < 1 or T < 1 or D < 1 or H < 1 or h0.shape[0] != N or Wx.shape[0] != D or Wx.shape[1] != H \
            or Wh.shape[0] != H or Wh.shape[1] != H or dh.shape[0] != N or dh.shape[1] != T or dh.shape[2] != H \
            or h.shape[0] != N or h.shape[1] != T or h.shape[2] != H:
        raise ValueError("rnn_backward: inconsistent or empty shapes")
    dtype = np.float32 if floating is float else np.float64
    da_arr = np.empty((N, T, H), dtype=dtype)  # gradient of the pre-activations
    hprev_arr = np.empty((N, T, H), dtype=dtype)  # the state each step read: h0, then h shifted one step
    dx_arr = np.empty((N, T, D), dtype=dtype)
    dh0_arr = np.empty((N, H), dtype=dtype)
    dWx_arr = np.empty((D, H), dtype=dtype)
    dWh_arr = np.empty((H, H), dtype=dtype)
    db_arr = np.zeros(H, dtype=dtype)
    cdef floating[::1] packed_WhT = packed_recurrent(Wh, True)
    cdef floating *packed = address(packed_WhT)
    cdef floating[:, :, ::1] da = da_arr, hprev = hprev_arr, dx = dx_arr
    cdef floating[:, ::1] dh0 = dh0_arr, dWx = dWx_arr, dWh = dWh_arr
    cdef floating[::1] db = db_arr
    cdef Py_ssize_t t, n
    cdef size_t row_bytes = H * sizeof(floating)
    with nogil:
        memcpy(&da[0, 0, 0], &dh[0, 0, 0], N * T * row_bytes)
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                # What step t+1 sends back through Wh adds to the loss's own gradient of h_t.
                step_product(N, H, &da[0, t + 1, 0], T * H, &Wh[0, 0], True, packed, &da[0, t, 0], T * H)
            for n in range(N):
                tanh_grad(&da[n, t, 0], &h[n, t, 0], H)
        memset(&dh0[0, 0], 0, N * row_bytes)
        step_product(N, H, &da[0, 0, 0], T * H, &Wh[0, 0], True, packed, &dh0[0, 0], H)

        for n in range(N):
            memcpy(&hprev[n, 0, 0], &h0[n, 0], row_bytes)
            if T > 1:
                memcpy(&hprev[n, 1, 0], &h[n, 0, 0], (T - 1) * row_bytes)
        gemm(False, True, N * T, D, H, 1, &da[0, 0, 0], H, &Wx[0, 0], H, 0, &dx[0, 0, 0], D)
        gemm(True, False, D, H, N * T, 1, &x[0, 0, 0], D, &da[0, 0, 0], H, 0, &dWx[0, 0], H)
        gemm(True, False, H, H, N * T, 1, &hprev[0, 0, 0], H, &da[0, 0, 0], H, 0, &dWh[0, 0], H)
        for n in range(N):
            for t in range(T):
                add(&db[0], &da[n, t, 0], H)
    return dx_arr, dh0_arr, dWx_arr, dWh_arr, db_arr


def rnn_step(const floating[:, ::1] x, const floating[:, ::1] prev_h, const floating[:, ::1] Wx,
             const floating[:, ::1] Wh, const floating[::1] b):
    """One step: x (N, D), prev_h (N, H) -> next_h (N, H) = tanh(x @ Wx + prev_h @ Wh + b)."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], H = prev_h.shape[1]
    if N < 1 or D < 1 or H < 1 or prev_h.shape[0] != N or Wx.shape[0] != D or Wx.shape[1] != H \
            or Wh.shape[0] != H or Wh.shape[1] != H or b.shape[0] != H:
        raise ValueError("rnn_step: inconsistent or empty shapes")
    out_arr = np.empty((N, H), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] out = out_arr
    cdef Py_ssize_t n
    with nogil:
        gemm(False, False, N, H, D, 1, &x[0, 0], D, &Wx[0, 0], H, 0, &out[0, 0], H)
        gemm(False, False, N, H, H, 1, &prev_h[0, 0], H, &Wh[0, 0], H, 1, &out[0, 0], H)
        for n in range(N):
            tanh_bias(&out[n, 0], &b[0], H)
    return out_arr
