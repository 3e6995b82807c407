# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled LSTM time loops (private; call them through captionkit_lstm.kernels, which validates inputs).

Only the recurrence lives here: the input projection x @ Wx + b is one large matrix product done before the forward
loop, and dx, dWx, dWh, db are large products done after the backward loop. Each step is one BLAS gemm for
h_{t-1} @ Wh (or its transpose) plus a fused elementwise pass over the gates, all without the GIL.

Layout: arrays are C-contiguous (N, T, ...); the rows of one time step are strided by T * width, which BLAS takes
as the leading dimension, so no step is copied.
"""
from cython cimport floating
from libc.math cimport exp, expf
from scipy.linalg cimport cython_blas

ctypedef void (*sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *, float *, int *, float *,
                         float *, int *) noexcept nogil
ctypedef void (*dgemm_t)(char *, char *, int *, int *, int *, double *, double *, int *, double *, int *, double *,
                         double *, int *) noexcept nogil

# The Fortran-ABI gemm every product goes through: scipy's, unless use_blas() names another (captionkit_lstm.kernels
# binds the BLAS of captionkit's own kernels, so that a training step runs on one BLAS and one thread pool).
cdef sgemm_t _sgemm = cython_blas.sgemm
cdef dgemm_t _dgemm = cython_blas.dgemm


def use_blas(size_t sgemm_address, size_t dgemm_address):
    """Call the sgemm_/dgemm_ at these addresses from now on; the caller keeps their library loaded."""
    global _sgemm, _dgemm
    if sgemm_address == 0 or dgemm_address == 0:
        raise ValueError("use_blas: null function address")
    _sgemm = <sgemm_t> sgemm_address
    _dgemm = <dgemm_t> dgemm_address


cdef inline void _gemm(char transa, char transb, int m, int n, int k, floating *a, int lda,
                       floating *b, int ldb, floating beta, floating *c, int ldc) noexcept nogil:
    """Column-major C = op(A) @ op(B) + beta * C (BLAS conventions)."""
    cdef floating alpha = 1
    if floating is float:
        _sgemm(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)
    else:
        _dgemm(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


# Both activations use exp only (libm's tanh is several times slower than its exp) and no branch. They are exact
# in the limits: exp overflows to +inf for very negative inputs and 1 / (1 + inf) is 0, so no NaN can appear.
cdef inline floating _sigmoid(floating v) noexcept nogil:
    return 1 / (1 + _exp(-v))


cdef inline floating _tanh(floating v) noexcept nogil:
    return 2 / (1 + _exp(-2 * v)) - 1


cdef inline void _gates_step(floating *a, const floating *prev_c, floating *c, floating *tanh_c, floating *h,
                             int H) noexcept nogil:
    """One row of one step: activate the pre-activations a[0:4H] in place and write c, tanh(c) and h (H each)."""
    cdef int j
    cdef floating i_gate, f_gate, o_gate, g_gate, c_new, tc
    for j in range(H):
        i_gate = _sigmoid(a[j])
        f_gate = _sigmoid(a[H + j])
        o_gate = _sigmoid(a[2 * H + j])
        g_gate = _tanh(a[3 * H + j])
        c_new = f_gate * prev_c[j] + i_gate * g_gate
        tc = _tanh(c_new)
        a[j] = i_gate
        a[H + j] = f_gate
        a[2 * H + j] = o_gate
        a[3 * H + j] = g_gate
        c[j] = c_new
        tanh_c[j] = tc
        h[j] = o_gate * tc


def forward_loop(floating[:, :, ::1] gates, floating[:, ::1] h0, floating[:, ::1] c0, floating[:, ::1] Wh,
                 floating[:, :, ::1] h, floating[:, :, ::1] c, floating[:, :, ::1] tanh_c):
    """Run the recurrence over T steps.

    gates (N, T, 4H) holds x @ Wx + b on entry and the activated gates i, f, o, g on return; h0, c0 (N, H) the
    initial states; Wh (H, 4H); h, c, tanh_c (N, T, H) are filled with the hidden states, cell states and tanh of
    the cell states.
    """
    cdef int N = gates.shape[0], T = gates.shape[1], H = h0.shape[1]
    cdef int G = 4 * H
    cdef int t, n
    with nogil:
        for t in range(T):
            # gates[:, t] += h_{t-1} @ Wh; in column-major terms gates_t^T (G x N) += Wh^T (G x H) @ h_{t-1}^T.
            if t == 0:
                _gemm(c'N', c'N', G, N, H, &Wh[0, 0], G, &h0[0, 0], H, 1, &gates[0, 0, 0], T * G)
            else:
                _gemm(c'N', c'N', G, N, H, &Wh[0, 0], G, &h[0, t - 1, 0], T * H, 1, &gates[0, t, 0], T * G)
            for n in range(N):
                _gates_step(&gates[n, t, 0], &c0[n, 0] if t == 0 else &c[n, t - 1, 0], &c[n, t, 0],
                            &tanh_c[n, t, 0], &h[n, t, 0], H)


def backward_loop(floating[:, :, ::1] dh, floating[:, :, ::1] gates, floating[:, :, ::1] c,
                  floating[:, :, ::1] tanh_c, floating[:, ::1] Wh, floating[:, :, ::1] da,
                  floating[:, ::1] dh_next, floating[:, ::1] dc_next):
    """Back-propagate through T steps.

    dh (N, T, H) upstream gradients of the hidden states; gates, c, tanh_c from :func:`forward_loop`; Wh (H, 4H).
    Fills da (N, T, 4H) with the gradients of the gate pre-activations. dh_next and dc_next (N, H) must be zero on
    entry; on return dh_next holds dh0 (c0 is a constant, so dc_next is scratch).
    """
    cdef int N = dh.shape[0], T = dh.shape[1], H = dh.shape[2]
    cdef int G = 4 * H
    cdef int t, n, j
    cdef floating *g_row
    cdef floating *d_row
    cdef floating i_gate, f_gate, o_gate, g_gate, tc, prev_c, dh_t, dc
    with nogil:
        for t in range(T - 1, -1, -1):
            for n in range(N):
                g_row = &gates[n, t, 0]
                d_row = &da[n, t, 0]
                for j in range(H):
                    i_gate = g_row[j]
                    f_gate = g_row[H + j]
                    o_gate = g_row[2 * H + j]
                    g_gate = g_row[3 * H + j]
                    tc = tanh_c[n, t, j]
                    prev_c = c[n, t - 1, j] if t > 0 else 0
                    dh_t = dh[n, t, j] + dh_next[n, j]
                    dc = dc_next[n, j] + dh_t * o_gate * (1 - tc * tc)
                    d_row[j] = dc * g_gate * i_gate * (1 - i_gate)
                    d_row[H + j] = dc * prev_c * f_gate * (1 - f_gate)
                    d_row[2 * H + j] = dh_t * tc * o_gate * (1 - o_gate)
                    d_row[3 * H + j] = dc * i_gate * (1 - g_gate * g_gate)
                    dc_next[n, j] = dc * f_gate
            # dh_next = da[:, t] @ Wh^T; column-major: dh_next^T (H x N) = Wh (H x G) @ da_t^T (G x N).
            _gemm(c'T', c'N', H, N, G, &Wh[0, 0], G, &da[0, t, 0], T * G, 0, &dh_next[0, 0], H)


def input_projection(floating[:, ::1] x, floating[:, ::1] Wx, floating[::1] b, floating[:, ::1] out):
    """out (M, 4H) = x (M, D) @ Wx (D, 4H) + b: the part of every gate that does not depend on h, for all rows."""
    cdef int M = x.shape[0], D = x.shape[1], G = Wx.shape[1]
    cdef int r, k
    with nogil:
        for r in range(M):
            for k in range(G):
                out[r, k] = b[k]
        # Column-major: out^T (G x M) += Wx^T (G x D) @ x^T (D x M).
        _gemm(c'N', c'N', G, M, D, &Wx[0, 0], G, &x[0, 0], D, 1, &out[0, 0], G)


def weight_gradients(floating[:, ::1] da, floating[:, ::1] x, floating[:, ::1] prev_h, floating[:, ::1] Wx,
                     floating[:, ::1] dx, floating[:, ::1] dWx, floating[:, ::1] dWh, floating[::1] db):
    """From da (M, 4H), the gradients of all gate pre-activations: dx (M, D) = da @ Wx^T, dWx (D, 4H) = x^T @ da,
    dWh (H, 4H) = prev_h^T @ da and db (4H,) = column sums of da. M = N*T rows; prev_h holds h_{t-1} per row."""
    cdef int M = da.shape[0], G = da.shape[1], D = x.shape[1], H = prev_h.shape[1]
    cdef int r, k
    with nogil:
        # Column-major: dx^T (D x M) = Wx (D x G) @ da^T (G x M).
        _gemm(c'T', c'N', D, M, G, &Wx[0, 0], G, &da[0, 0], G, 0, &dx[0, 0], D)
        # dWx^T (G x D) = da^T (G x M) @ x (M x D); dWh^T (G x H) = da^T (G x M) @ prev_h (M x H).
        _gemm(c'N', c'T', G, D, M, &da[0, 0], G, &x[0, 0], D, 0, &dWx[0, 0], G)
        _gemm(c'N', c'T', G, H, M, &da[0, 0], G, &prev_h[0, 0], H, 0, &dWh[0, 0], G)
        for k in range(G):
            db[k] = 0
        for r in range(M):
            for k in range(G):
                db[k] += da[r, k]
