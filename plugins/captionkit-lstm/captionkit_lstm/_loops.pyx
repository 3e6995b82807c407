# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled LSTM time loops (private; call them through captionkit_lstm.kernels, which validates inputs).

Only the recurrence lives here: the input projection x @ Wx + b is one large matrix product done before the forward
loop, and dx, dWx, dWh, db are large products done after the backward loop. Each step is one product for
h_{t-1} @ Wh (or da_t @ Wh^T) plus an elementwise pass over the gates, all without the GIL.

Every routine the loops call is a function pointer that captionkit_lstm.kernels binds to captionkit's compiled
kernels (``captionkit.kernels.blas_functions`` and ``vector_functions``): their BLAS, their packed-panel products,
which pack Wh once per call instead of once per step as a BLAS gemm does (CPUs with AVX-512), and their vectorised
sigmoid and tanh. Without captionkit's kernels the loops keep scipy's BLAS and libm. The bindings are set once at
import (and by tests); a call keeps its packed Wh in a buffer of its own, so calls on several threads are safe.

Layout: arrays are C-contiguous (N, T, ...); the rows of one time step are strided by T * width, which the products
take as the leading dimension, so no step is copied.
"""
import numpy as np
from cython cimport floating
from libc.math cimport exp, expf, tanh, tanhf
from libc.string cimport memcpy, memset
from scipy.linalg cimport cython_blas

ctypedef void (*sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *, float *, int *, float *,
                         float *, int *) noexcept nogil
ctypedef void (*dgemm_t)(char *, char *, int *, int *, int *, double *, double *, int *, double *, int *, double *,
                         double *, int *) noexcept nogil
ctypedef Py_ssize_t (*packed_size_t)(Py_ssize_t, Py_ssize_t) noexcept nogil
ctypedef void (*pack_s_t)(Py_ssize_t, Py_ssize_t, const float *, Py_ssize_t, int, float *) noexcept nogil
ctypedef void (*pack_d_t)(Py_ssize_t, Py_ssize_t, const double *, Py_ssize_t, int, double *) noexcept nogil
ctypedef void (*panel_sgemm_t)(Py_ssize_t, Py_ssize_t, Py_ssize_t, const float *, Py_ssize_t, float *, float *,
                               Py_ssize_t) noexcept nogil
ctypedef void (*panel_dgemm_t)(Py_ssize_t, Py_ssize_t, Py_ssize_t, const double *, Py_ssize_t, double *, double *,
                               Py_ssize_t) noexcept nogil
ctypedef void (*activation_s_t)(float *, Py_ssize_t) noexcept nogil
ctypedef void (*activation_d_t)(double *, Py_ssize_t) noexcept nogil


# ---------------------------------------------------------------------- activations


# libm's, for when captionkit's kernels are not built: scalar, several times slower than captionkit's vectorised ones.
cdef void _libm_sigmoid_s(float *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = 1 / (1 + expf(-y[i]))


cdef void _libm_sigmoid_d(double *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = 1 / (1 + exp(-y[i]))


cdef void _libm_tanh_s(float *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = tanhf(y[i])


cdef void _libm_tanh_d(double *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = tanh(y[i])


cdef activation_s_t _sigmoid_s = _libm_sigmoid_s
cdef activation_d_t _sigmoid_d = _libm_sigmoid_d
cdef activation_s_t _tanh_s = _libm_tanh_s
cdef activation_d_t _tanh_d = _libm_tanh_d


def use_vector_functions(addresses):
    """Activate the gates with the in-place ``sigmoid_s/_d`` and ``tanh_s/_d`` at these addresses (the dict of
    ``captionkit.kernels.vector_functions``; the caller keeps their library loaded), or with libm's for None."""
    global _sigmoid_s, _sigmoid_d, _tanh_s, _tanh_d
    if addresses is None:
        _sigmoid_s, _sigmoid_d, _tanh_s, _tanh_d = _libm_sigmoid_s, _libm_sigmoid_d, _libm_tanh_s, _libm_tanh_d
        return
    cdef size_t sigmoid_s = addresses["sigmoid_s"], sigmoid_d = addresses["sigmoid_d"]
    cdef size_t tanh_s = addresses["tanh_s"], tanh_d = addresses["tanh_d"]
    if 0 in (sigmoid_s, sigmoid_d, tanh_s, tanh_d):
        raise ValueError("use_vector_functions: null function address")
    _sigmoid_s, _sigmoid_d = <activation_s_t> sigmoid_s, <activation_d_t> sigmoid_d
    _tanh_s, _tanh_d = <activation_s_t> tanh_s, <activation_d_t> tanh_d


def vector_functions():
    """Addresses of the activations the loops call now, by the names of ``use_vector_functions``."""
    return {"sigmoid_s": <size_t> _sigmoid_s, "sigmoid_d": <size_t> _sigmoid_d,
            "tanh_s": <size_t> _tanh_s, "tanh_d": <size_t> _tanh_d}


cdef inline void _sigmoid(floating *y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        _sigmoid_s(y, n)
    else:
        _sigmoid_d(y, n)


cdef inline void _tanh(floating *y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        _tanh_s(y, n)
    else:
        _tanh_d(y, n)


# ---------------------------------------------------------------------- matrix products

# The Fortran-ABI gemm of the large products, and of the per-step ones without panels: scipy's, unless use_blas()
# names another (captionkit_lstm.kernels binds the BLAS of captionkit's own kernels, so that a training step runs on
# one BLAS and one thread pool).
cdef sgemm_t _sgemm = cython_blas.sgemm
cdef dgemm_t _dgemm = cython_blas.dgemm


def use_blas(size_t sgemm_address, size_t dgemm_address):
    """Call the sgemm_/dgemm_ at these addresses from now on; the caller keeps their library loaded."""
    global _sgemm, _dgemm
    if sgemm_address == 0 or dgemm_address == 0:
        raise ValueError("use_blas: null function address")
    _sgemm = <sgemm_t> sgemm_address
    _dgemm = <dgemm_t> dgemm_address


cdef inline void _gemm(char transa, char transb, int m, int n, int k, const floating *a, int lda,
                       const floating *b, int ldb, floating beta, floating *c, int ldc) noexcept nogil:
    """Column-major C = op(A) @ op(B) + beta * C (BLAS conventions; BLAS never writes A or B)."""
    cdef floating alpha = 1
    if floating is float:
        _sgemm(&transa, &transb, &m, &n, &k, &alpha, <float *> a, &lda, <float *> b, &ldb, &beta, c, &ldc)
    else:
        _dgemm(&transa, &transb, &m, &n, &k, &alpha, <double *> a, &lda, <double *> b, &ldb, &beta, c, &ldc)


# The packed-panel products (captionkit.kernels.blas_functions()["panel"]); bound only where the CPU has them.
cdef packed_size_t _packed_size_s = NULL
cdef packed_size_t _packed_size_d = NULL
cdef pack_s_t _pack_s = NULL
cdef pack_d_t _pack_d = NULL
cdef panel_sgemm_t _panel_sgemm = NULL
cdef panel_dgemm_t _panel_dgemm = NULL
cdef bint _use_panel = False


def use_panel_functions(addresses):
    """Bind the packed-panel products at these addresses (the ``panel`` dict of captionkit.kernels.blas_functions;
    the caller keeps their library loaded) and use them from now on."""
    global _packed_size_s, _packed_size_d, _pack_s, _pack_d, _panel_sgemm, _panel_dgemm, _use_panel
    names = ("packed_size_s", "packed_size_d", "pack_s", "pack_d", "panel_sgemm", "panel_dgemm")
    for name in names:
        if not addresses[name]:
            raise ValueError(f"use_panel_functions: null address for {name}")
    cdef size_t packed_size_s = addresses["packed_size_s"], packed_size_d = addresses["packed_size_d"]
    cdef size_t pack_s = addresses["pack_s"], pack_d = addresses["pack_d"]
    cdef size_t panel_sgemm = addresses["panel_sgemm"], panel_dgemm = addresses["panel_dgemm"]
    _packed_size_s, _packed_size_d = <packed_size_t> packed_size_s, <packed_size_t> packed_size_d
    _pack_s, _pack_d = <pack_s_t> pack_s, <pack_d_t> pack_d
    _panel_sgemm, _panel_dgemm = <panel_sgemm_t> panel_sgemm, <panel_dgemm_t> panel_dgemm
    _use_panel = True


def use_panel(bint flag):
    """Run the per-step products on packed panels (when bound) or on BLAS; returns the previous choice.

    For tests and benchmarks, which compare the two paths.
    """
    global _use_panel
    previous = _use_panel
    _use_panel = flag and _panel_sgemm != NULL
    return previous


cdef inline Py_ssize_t _packed_size(floating kind, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return _packed_size_s(k, n)
    else:
        return _packed_size_d(k, n)


cdef object _packed(const floating[:, ::1] Wh, bint trans):
    """op(Wh) packed for _step_product (op the transpose when trans is set); None on the BLAS path.

    Packed whole: captionkit's product reads it once per step for up to 4 tiles of rows, so a batch shard of up to
    56 rows streams the LSTM's 4 MiB Wh through the cache once a step (blocking it to L2 size measured no faster).
    """
    if not _use_panel:
        return None
    cdef Py_ssize_t H = Wh.shape[0], G = Wh.shape[1]
    cdef Py_ssize_t k = G if trans else H, n = H if trans else G
    cdef floating kind = 0
    buffer = np.empty(_packed_size(kind, k, n), dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] packed = buffer
    with nogil:
        # op(Wh) is Wh (H, 4H) as it is, or, with trans, Wh read transposed (4H, H).
        if floating is float:
            _pack_s(k, n, &Wh[0, 0], G, trans, &packed[0])
        else:
            _pack_d(k, n, &Wh[0, 0], G, trans, &packed[0])
    return buffer


cdef inline floating *_address(floating[::1] packed) noexcept:
    """Start of a packed buffer, or NULL for None."""
    return NULL if packed is None else &packed[0]


cdef inline void _step_product(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a, Py_ssize_t lda,
                               const floating *Wh, bint trans, floating *packed, floating *c,
                               Py_ssize_t ldc) noexcept nogil:
    """Row-major c (m, n) += a (m, k) @ op(Wh), Wh (H, 4H): op is the transpose when trans is set. packed (when not
    NULL) holds op(Wh) packed by _packed; otherwise BLAS multiplies Wh itself."""
    if packed != NULL:
        if floating is float:
            _panel_sgemm(m, n, k, a, lda, packed, c, ldc)
        else:
            _panel_dgemm(m, n, k, a, lda, packed, c, ldc)
    elif trans:
        # n = H, k = 4H. Column-major: c^T (H x m) += Wh (H x 4H) @ a^T (4H x m); Wh's row-major storage is the
        # column-major (4H x H) matrix Wh^T, hence op 'T'.
        _gemm(c'T', c'N', <int> n, <int> m, <int> k, Wh, <int> k, a, <int> lda, 1, c, <int> ldc)
    else:
        # n = 4H, k = H. Column-major: c^T (4H x m) += Wh^T (4H x H), Wh's row-major storage, @ a^T (H x m).
        _gemm(c'N', c'N', <int> n, <int> m, <int> k, Wh, <int> n, a, <int> lda, 1, c, <int> ldc)


# ---------------------------------------------------------------------- time loops


cdef inline void _gates_step(floating *a, const floating *prev_c, floating *c, floating *tanh_c, floating *h,
                             Py_ssize_t H) noexcept nogil:
    """One row of one step: activate the pre-activations a[0:4H] in place (blocks i, f, o, g) and write c, tanh(c)
    and h (H each)."""
    cdef Py_ssize_t j
    _sigmoid(a, 3 * H)
    _tanh(a + 3 * H, H)
    for j in range(H):
        c[j] = a[H + j] * prev_c[j] + a[j] * a[3 * H + j]
    memcpy(tanh_c, c, H * sizeof(floating))
    _tanh(tanh_c, H)
    for j in range(H):
        h[j] = a[2 * H + j] * tanh_c[j]


cdef extern from "_gates.h" nogil:
    void lstm_gates_backward_f(const float *a, const float *tanh_c, const float *prev_c, const float *dh,
                               const float *dh_next, float *dc_next, float *da, Py_ssize_t H)
    void lstm_gates_backward_d(const double *a, const double *tanh_c, const double *prev_c, const double *dh,
                               const double *dh_next, double *dc_next, double *da, Py_ssize_t H)


cdef inline void _gates_backward(const floating *a, const floating *tanh_c, const floating *prev_c,
                                 const floating *dh, const floating *dh_next, floating *dc_next, floating *da,
                                 Py_ssize_t H) noexcept nogil:
    """One row of one step backward (see _gates.h): da (4H) from the gates a (4H), tanh(c), c_{t-1}, the upstream
    dh and the recurrent dh_next (H each); dc_next becomes dc * f."""
    if floating is float:
        lstm_gates_backward_f(a, tanh_c, prev_c, dh, dh_next, dc_next, da, H)
    else:
        lstm_gates_backward_d(a, tanh_c, prev_c, dh, dh_next, dc_next, da, H)


def forward_loop(floating[:, :, ::1] gates, const floating[:, ::1] h0, const floating[:, ::1] c0,
                 const floating[:, ::1] Wh, floating[:, :, ::1] h, floating[:, :, ::1] c, floating[:, :, ::1] tanh_c):
    """Run the recurrence over T steps.

    gates (N, T, 4H) holds x @ Wx + b on entry and the activated gates i, f, o, g on return; h0, c0 (N, H) the
    initial states; Wh (H, 4H); h, c, tanh_c (N, T, H) are filled with the hidden states, cell states and tanh of
    the cell states.
    """
    cdef Py_ssize_t N = gates.shape[0], T = gates.shape[1], H = h0.shape[1]
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t t, n
    cdef floating[::1] packed_Wh = _packed(Wh, False)
    cdef floating *packed = _address(packed_Wh)
    with nogil:
        for t in range(T):
            # gates[:, t] += h_{t-1} @ Wh
            if t == 0:
                _step_product(N, G, H, &h0[0, 0], H, &Wh[0, 0], False, packed, &gates[0, 0, 0], T * G)
            else:
                _step_product(N, G, H, &h[0, t - 1, 0], T * H, &Wh[0, 0], False, packed, &gates[0, t, 0], T * G)
            for n in range(N):
                _gates_step(&gates[n, t, 0], &c0[n, 0] if t == 0 else &c[n, t - 1, 0], &c[n, t, 0],
                            &tanh_c[n, t, 0], &h[n, t, 0], H)


def backward_loop(const floating[:, :, ::1] dh, const floating[:, :, ::1] gates, const floating[:, :, ::1] c,
                  const floating[:, :, ::1] tanh_c, const floating[:, ::1] Wh, floating[:, :, ::1] da,
                  floating[:, ::1] dh_next, floating[:, ::1] dc_next):
    """Back-propagate through T steps.

    dh (N, T, H) upstream gradients of the hidden states; gates, c, tanh_c from :func:`forward_loop`; Wh (H, 4H).
    Fills da (N, T, 4H) with the gradients of the gate pre-activations. dh_next and dc_next (N, H) must be zero on
    entry; on return dh_next holds dh0 (c0 is a constant, so dc_next is scratch).
    """
    cdef Py_ssize_t N = dh.shape[0], T = dh.shape[1], H = dh.shape[2]
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t t, n
    cdef floating[::1] packed_WhT = _packed(Wh, True)
    cdef floating *packed = _address(packed_WhT)
    zeros = np.zeros(H, dtype=np.float32 if floating is float else np.float64)
    cdef const floating[::1] c0 = zeros  # the initial cell state
    with nogil:
        for t in range(T - 1, -1, -1):
            for n in range(N):
                _gates_backward(&gates[n, t, 0], &tanh_c[n, t, 0], &c[n, t - 1, 0] if t > 0 else &c0[0],
                                &dh[n, t, 0], &dh_next[n, 0], &dc_next[n, 0], &da[n, t, 0], H)
            # dh_next = da[:, t] @ Wh^T
            memset(&dh_next[0, 0], 0, N * H * sizeof(floating))
            _step_product(N, H, G, &da[0, t, 0], T * G, &Wh[0, 0], True, packed, &dh_next[0, 0], H)


def input_projection(const floating[:, ::1] x, const floating[:, ::1] Wx, const floating[::1] b,
                     floating[:, ::1] out):
    """out (M, 4H) = x (M, D) @ Wx (D, 4H) + b: the part of every gate that does not depend on h, for all rows."""
    cdef int M = x.shape[0], D = x.shape[1], G = Wx.shape[1]
    cdef int r
    with nogil:
        for r in range(M):
            memcpy(&out[r, 0], &b[0], G * sizeof(floating))
        # Column-major: out^T (G x M) += Wx^T (G x D) @ x^T (D x M).
        _gemm(c'N', c'N', G, M, D, &Wx[0, 0], G, &x[0, 0], D, 1, &out[0, 0], G)


def weight_gradients(const floating[:, ::1] da, const floating[:, ::1] x, const floating[:, ::1] prev_h,
                     const floating[:, ::1] Wx, floating[:, ::1] dx, floating[:, ::1] dWx, floating[:, ::1] dWh,
                     floating[::1] db):
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
