"""Soft attention on the gated recurrence engine: sequence forward and backward, one step, and greedy decoding of
any gated cell reading, at every step, a glimpse g_t of the image's regions (captionkit/attention/soft.py and
cell.py are the numpy reference these follow, equation for equation).

Private: call these through captionkit.kernels, which checks every array first. Step t of every function is the
same four pieces, in the order the reference runs them:

    q_t = h_{t-1} Wa + ba, beta's pre-activations h_{t-1} Wbeta + bbeta      two products over the N rows
    s, alpha_t, z_t, beta_t, g_t                                             _attend.h, row by row
    a_t = x_t Wx + b + g_t Wz                                                a product added onto the input part
    the cell's step (_engine.pxd's step_rows: h_{t-1} Wh, then its pointwise part)

The regions' keys V Ua are one product per call (per sequence), as in the reference. Every matrix is packed once per
call when the panel products are on (_panel.h), like the engine's Wh; with ``Weights.bf16`` every product takes its
inputs rounded to bfloat16 (_mixed.pxd) on matrices rounded once per call, and the row math of _attend.h (the
scores, the softmax over the regions, the weighted sum, the gate) stays float32. Backward undoes the steps in reverse
with the products that carry gradient to h_{t-1} (through Wh, Wa and Wbeta) inside the loop, and computes every
parameter's gradient after it as one large product. A cell's pointwise part runs compiled, or as numpy callbacks with the GIL,
exactly as in _engine.pyx.

Shapes: N rows, T steps, W word-vector size, H hidden size, G gate blocks (GH = G*H), S state arrays, L regions,
D feature size, P attention size. Arrays are C-contiguous; a step's rows of an (N, T, ...) array sit T * width apart.
"""
import numpy as np
from cython cimport floating
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from captionkit._ext._bf16 cimport bf16_work
from captionkit._ext._blas cimport large_on_panels, panel_enabled
from captionkit._ext._engine cimport (CellCode, backward_function, bias_rows, forward_function, numpy_forward_step,
                                      step_rows, undo_step, zero_rows)
from captionkit._ext._mixed cimport check_bf16, mixed_matmul, mixed_packed_copy, mixed_product, short_of_memory
from captionkit._ext._panel cimport packed_copy
from captionkit._ext._vecmath cimport add, argmax_bias


cdef extern from "_attend.h" nogil:
    void ck_soft_forward_row_f(Py_ssize_t L, Py_ssize_t D, Py_ssize_t P, const float *V, const float *keys,
                               const float *q, const float *wa, float *s, float *alpha, float *z, float *beta,
                               float *g)
    void ck_soft_forward_row_d(Py_ssize_t L, Py_ssize_t D, Py_ssize_t P, const double *V, const double *keys,
                               const double *q, const double *wa, double *s, double *alpha, double *z,
                               double *beta, double *g)
    void ck_soft_backward_row_f(Py_ssize_t L, Py_ssize_t D, Py_ssize_t P, const float *V, const float *wa,
                                const float *s, const float *alpha, const float *z, const float *beta,
                                const float *dg, float *dalpha, float *dbeta, float *dq, float *dV, float *dkeys,
                                float *dwa, float *dz)
    void ck_soft_backward_row_d(Py_ssize_t L, Py_ssize_t D, Py_ssize_t P, const double *V, const double *wa,
                                const double *s, const double *alpha, const double *z, const double *beta,
                                const double *dg, double *dalpha, double *dbeta, double *dq, double *dV,
                                double *dkeys, double *dwa, double *dz)


cdef class Weights:
    """The cell's and the mechanism's parameters as one call reads them: numpy arrays of one dtype, C-contiguous,
    checked by captionkit.kernels (a holder, so that the calls below take one argument for nine), and whether the
    call's products round their inputs to bfloat16 (float32 only; _mixed.pxd)."""

    cdef readonly object Wx, Wh, b, Wz, Wa, ba, wa, Wbeta, bbeta
    cdef readonly bint bf16

    def __init__(self, Wx, Wh, b, Wz, Wa, ba, wa, Wbeta, bbeta, bint bf16=False):
        self.Wx, self.Wh, self.b, self.Wz, self.Wa, self.ba, self.wa, self.Wbeta, self.bbeta = \
            Wx, Wh, b, Wz, Wa, ba, wa, Wbeta, bbeta
        self.bf16 = bf16


cdef void *_packed(bint bf16, const floating *b, Py_ssize_t k, Py_ssize_t n, Py_ssize_t ldb,
                   bint trans) noexcept nogil:
    """B (k, n), or B given as its transpose, packed for _product: rounded to bfloat16 panels when bf16, else in
    the float32 panels' layout; NULL when memory is short (float32: that product then runs on BLAS)."""
    if bf16:
        return mixed_packed_copy(bf16, b, k, n, ldb, trans)
    return packed_copy(b, k, n, ldb, trans)


cdef inline void _product(bint bf16, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a, Py_ssize_t lda,
                          const floating *b, bint trans, void *packed, uint32_t *work, floating *c,
                          Py_ssize_t ldc) noexcept nogil:
    """C (m, n) += A (m, k) @ op(B) on op(B) as _packed made it (float32: NULL runs on BLAS)."""
    if bf16:
        mixed_product(m, n, k, a, lda, b, trans, NULL, <const uint16_t *> packed, work, c, ldc)
    else:
        mixed_product(m, n, k, a, lda, b, trans, <floating *> packed, NULL, NULL, c, ldc)


cdef bint _all_packed(void **packed, Py_ssize_t first, Py_ssize_t last, uint32_t *work) noexcept nogil:
    """Whether packed[first..last] and the work space were all allocated (bf16 has no BLAS to fall back on)."""
    cdef Py_ssize_t i
    for i in range(first, last + 1):
        if packed[i] == NULL:
            return False
    return work != NULL


cdef void _pack_forward(const floating[:, ::1] Wx, const floating[:, ::1] Wh, const floating[:, ::1] Wz,
                        const floating[:, ::1] Wa, const floating[:, ::1] Wbeta, void **packed,
                        bint with_Wx, bint bf16) noexcept nogil:
    """packed[0..4] = Wx (when with_Wx), Wh, Wz, Wa, Wbeta as _packed makes them."""
    if with_Wx:
        packed[0] = _packed(bf16, &Wx[0, 0], Wx.shape[0], Wx.shape[1], Wx.shape[1], False)
    packed[1] = _packed(bf16, &Wh[0, 0], Wh.shape[0], Wh.shape[1], Wh.shape[1], False)
    packed[2] = _packed(bf16, &Wz[0, 0], Wz.shape[0], Wz.shape[1], Wz.shape[1], False)
    packed[3] = _packed(bf16, &Wa[0, 0], Wa.shape[0], Wa.shape[1], Wa.shape[1], False)
    packed[4] = _packed(bf16, &Wbeta[0, 0], Wbeta.shape[0], Wbeta.shape[1], Wbeta.shape[1], False)


cdef void _free_all(void **packed, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        free(packed[i])
        packed[i] = NULL


cdef void _attend_rows(Py_ssize_t N, Py_ssize_t H, Py_ssize_t L, Py_ssize_t D, Py_ssize_t P, Py_ssize_t GH,
                       const floating *h, Py_ssize_t ldh, const floating *V, const floating *keys,
                       const int64_t *images, const floating *Wa, const floating *ba, const floating *wa,
                       const floating *Wbeta, const floating *bbeta, const floating *Wz, void **packed, bint bf16,
                       uint32_t *work, floating *q, floating *s, Py_ssize_t lds, floating *alpha, Py_ssize_t ldal,
                       floating *z, floating *beta, floating *g, Py_ssize_t ldd, floating *a,
                       Py_ssize_t lda) noexcept nogil:
    """The mechanism's step for N rows of h_{t-1} (row stride ldh) and the glimpse's share of the input
    pre-activations: row n reads image images[n] (NULL: image n) of V (., L, D) and keys (., L, P); writes its tanh
    values s (L*P, row stride lds), alpha (L, stride ldal), z, beta and g (D each, stride ldd), and adds g Wz onto a
    (GH, stride lda). q (N, P) is work space. ``packed`` as _pack_forward fills it, ``work`` bf16's work space."""
    cdef Py_ssize_t n, image
    bias_rows(q, ba, N, P, P)
    _product(bf16, N, P, H, h, ldh, Wa, False, packed[3], work, q, P)
    bias_rows(beta, bbeta, N, D, ldd)
    _product(bf16, N, D, H, h, ldh, Wbeta, False, packed[4], work, beta, ldd)
    for n in range(N):
        image = n if images == NULL else images[n]
        if floating is float:
            ck_soft_forward_row_f(L, D, P, V + image * L * D, keys + image * L * P, q + n * P, wa, s + n * lds,
                                  alpha + n * ldal, z + n * ldd, beta + n * ldd, g + n * ldd)
        else:
            ck_soft_forward_row_d(L, D, P, V + image * L * D, keys + image * L * P, q + n * P, wa, s + n * lds,
                                  alpha + n * ldal, z + n * ldd, beta + n * ldd, g + n * ldd)
    _product(bf16, N, GH, D, g, ldd, Wz, False, packed[2], work, a, lda)


def _sizes_fit(CellCode code, Py_ssize_t W, Py_ssize_t H, Py_ssize_t D, Py_ssize_t P, Weights weights):
    """Every matrix of ``weights`` fits W, H, D, P and the cell's G gates (captionkit.kernels has said which does
    not; this guards the compiled loops)."""
    GH = code.gates * H
    return W >= 1 and H >= 1 and D >= 1 and P >= 1 and weights.Wx.shape == (W, GH) and \
        weights.Wh.shape == (H, GH) and weights.b.shape == (GH,) and weights.Wz.shape == (D, GH) and \
        weights.Wa.shape == (H, P) and weights.ba.shape == (P,) and weights.wa.shape == (P,) and \
        weights.Wbeta.shape == (H, D) and weights.bbeta.shape == (D,)


def _fits(array, shape):
    return np.asarray(array).shape == shape


def soft_keys(const floating[:, :, ::1] V, const floating[:, ::1] Ua, bint bf16=False):
    """The regions' keys V Ua: V (N, L, D), Ua (D, P) -> (N, L, P), one product (of bfloat16 inputs with bf16)."""
    cdef Py_ssize_t N = V.shape[0], L = V.shape[1], D = V.shape[2], P = Ua.shape[1]
    if N < 1 or L < 1 or D < 1 or P < 1 or Ua.shape[0] != D:
        raise ValueError("soft_keys: inconsistent or empty shapes")
    cdef floating kind = 0
    check_bf16(bf16, kind, "soft_keys")
    keys_arr = np.empty((N, L, P), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, ::1] keys = keys_arr
    cdef bint fits
    with nogil:
        fits = mixed_matmul(bf16, False, False, N * L, P, D, &V[0, 0, 0], D, &Ua[0, 0], P, False, &keys[0, 0, 0], P)
    if not fits:
        raise MemoryError(short_of_memory("soft_keys"))
    return keys_arr


# ---------------------------------------------------------------------- sequence forward and backward


def soft_forward(const floating[:, :, ::1] x, const floating[:, :, ::1] s0, const floating[:, :, ::1] V,
                 const floating[:, :, ::1] keys, Weights weights, CellCode code):
    """x (N, T, W), s0 (S, N, H) the initial state, V (N, L, D), keys (N, L, P) = V Ua ->
    (states (S, N, T, H), A, U, saved as _engine.gated_forward gives them; then s (N, T, L, P) the tanh values,
    alpha (N, T, L), z (N, T, D), beta (N, T, D), g (N, T, D), what the backward reads)."""
    cdef Py_ssize_t N = x.shape[0], T = x.shape[1], W = x.shape[2], S = code.states, H = s0.shape[2]
    cdef Py_ssize_t L = V.shape[1], D = V.shape[2], P = keys.shape[2], GH = code.gates * H, t
    if N < 1 or T < 1 or L < 1 or s0.shape[0] != S or s0.shape[1] != N or V.shape[0] != N \
            or keys.shape[0] != N or keys.shape[1] != L or not _sizes_fit(code, W, H, D, P, weights):
        raise ValueError("soft_forward: inconsistent or empty shapes")
    dtype = np.float32 if floating is float else np.float64
    cdef floating kind = 0
    cdef bint bf16 = weights.bf16
    check_bf16(bf16, kind, "soft_forward")
    cdef void *fn = forward_function(code, kind)
    cdef Py_ssize_t width = code.kept * H if fn != NULL else GH
    cdef bint summed = code.summed
    cdef const floating[:, ::1] Wx = weights.Wx, Wh = weights.Wh, Wz = weights.Wz, Wa = weights.Wa
    cdef const floating[:, ::1] Wbeta = weights.Wbeta
    cdef const floating[::1] b = weights.b, ba = weights.ba, wa = weights.wa, bbeta = weights.bbeta
    A_arr = np.empty((N, T, width), dtype=dtype)
    U_arr = None if summed else np.empty((N, T, GH), dtype=dtype)
    states_arr = np.empty((S, N, T, H), dtype=dtype)
    s_arr = np.empty((N, T, L, P), dtype=dtype)
    alpha_arr = np.empty((N, T, L), dtype=dtype)
    z_arr, beta_arr, g_arr = [np.empty((N, T, D), dtype=dtype) for _ in range(3)]
    q_arr = np.empty((N, P), dtype=dtype)
    s0_arr = np.asarray(s0)
    saved = None if fn != NULL else [None] * T
    cdef floating[:, :, ::1] A = A_arr, alpha = alpha_arr, z = z_arr, beta = beta_arr, g = g_arr
    cdef floating[:, :, :, ::1] s = s_arr, states = states_arr
    cdef floating[:, ::1] q = q_arr
    cdef floating[:, :, ::1] U
    if not summed:
        U = U_arr
    cdef void *packed[8]
    memset(packed, 0, sizeof(packed))
    cdef uint32_t *work = NULL
    cdef floating *u = NULL
    cdef const floating *prev
    cdef Py_ssize_t prev_s, prev_n
    cdef bint fits = True
    try:
        with nogil:
            if bf16:
                _pack_forward(Wx, Wh, Wz, Wa, Wbeta, packed, False, bf16)
                work = bf16_work(N, max(H, D))
                fits = _all_packed(packed, 1, 4, work)
            elif panel_enabled():
                _pack_forward(Wx, Wh, Wz, Wa, Wbeta, packed, False, bf16)
            bias_rows(&A[0, 0, 0], &b[0], N * T, GH, width)
            fits = fits and mixed_matmul(bf16, False, False, N * T, GH, W, &x[0, 0, 0], W, &Wx[0, 0], GH, True,
                                         &A[0, 0, 0], width)
        if not fits:
            raise MemoryError(short_of_memory("soft_forward"))
        for t in range(T):
            with nogil:
                if t == 0:
                    prev, prev_s, prev_n = &s0[0, 0, 0], N * H, H
                else:
                    prev, prev_s, prev_n = &states[0, 0, t - 1, 0], N * T * H, T * H
                _attend_rows(N, H, L, D, P, GH, prev, prev_n, &V[0, 0, 0], &keys[0, 0, 0], NULL, &Wa[0, 0], &ba[0],
                             &wa[0], &Wbeta[0, 0], &bbeta[0], &Wz[0, 0], packed, bf16, work, &q[0, 0],
                             &s[0, t, 0, 0], T * L * P, &alpha[0, t, 0], T * L, &z[0, t, 0], &beta[0, t, 0],
                             &g[0, t, 0], T * D, &A[0, t, 0], T * width)
                if not summed:
                    u = &U[0, t, 0]
                step_rows(fn, N, H, S, GH, summed, &Wh[0, 0], NULL if bf16 else <floating *> packed[1],
                          <uint16_t *> packed[1] if bf16 else NULL, work, &A[0, t, 0], T * width, u, T * GH, prev,
                          prev_s, prev_n, &states[0, 0, t, 0], N * T * H, T * H)
            if fn == NULL:
                prev_views = s0_arr if t == 0 else states_arr[:, :, t - 1]
                saved[t] = numpy_forward_step(code, A_arr[:, t], None if summed else U_arr[:, t], prev_views,
                                              states_arr[:, :, t])
    finally:
        _free_all(packed, 8)
        free(work)
    if fn == NULL:
        A_arr = U_arr = None
    return states_arr, A_arr, U_arr, saved, s_arr, alpha_arr, z_arr, beta_arr, g_arr


def soft_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] dalphas, const floating[:, :, ::1] x,
                  const floating[:, :, ::1] s0, const floating[:, :, ::1] V, const floating[:, ::1] Ua,
                  Weights weights, const floating[:, :, :, ::1] states, A_arr, U_arr, saved,
                  const floating[:, :, :, ::1] s, const floating[:, :, ::1] alpha, const floating[:, :, ::1] z,
                  const floating[:, :, ::1] beta, const floating[:, :, ::1] g, CellCode code, bint context_grad):
    """Backward of soft_forward given its inputs and outputs; dh (N, T, H) the loss's gradient of every h_t (not
    counting the recurrence), dalphas (N, T, L) a penalty's gradient of the weights -> (dx (N, T, W), dstate
    (S, N, H) the gradient of s0, dV (N, L, D) or None without ``context_grad``, and the gradients of Wx, Wh, b, Wz,
    Ua, Wa, ba, wa, Wbeta, bbeta). Image features are data: without ``context_grad`` V's gradient, the cost of a
    product as large as the keys' and a pass over V per step, is skipped."""
    cdef Py_ssize_t N = x.shape[0], T = x.shape[1], W = x.shape[2], S = code.states, H = s0.shape[2]
    cdef Py_ssize_t L = V.shape[1], D = V.shape[2], P = Ua.shape[1], GH = code.gates * H, t, n
    cdef floating kind = 0
    cdef bint bf16 = weights.bf16
    check_bf16(bf16, kind, "soft_backward")
    cdef void *fn = backward_function(code, kind)
    cdef Py_ssize_t width = code.kept * H
    cdef bint summed = code.summed
    if N < 1 or T < 1 or L < 1 or s0.shape[0] != S or s0.shape[1] != N or V.shape[0] != N or Ua.shape[0] != D \
            or not _sizes_fit(code, W, H, D, P, weights) \
            or not _fits(dh, (N, T, H)) or not _fits(dalphas, (N, T, L)) or not _fits(states, (S, N, T, H)) \
            or not _fits(s, (N, T, L, P)) or not _fits(alpha, (N, T, L)) or not _fits(z, (N, T, D)) \
            or not _fits(beta, (N, T, D)) or not _fits(g, (N, T, D)) \
            or (fn == NULL and (saved is None or len(saved) != T)) \
            or (fn != NULL and (A_arr is None or (U_arr is None) != summed)):
        raise ValueError("soft_backward: inconsistent or empty shapes, or a cache of another cell")
    dtype = np.float32 if floating is float else np.float64
    cdef const floating[:, ::1] Wx = weights.Wx, Wh = weights.Wh, Wz = weights.Wz, Wa = weights.Wa
    cdef const floating[:, ::1] Wbeta = weights.Wbeta
    cdef const floating[::1] wa = weights.wa
    cdef const floating[:, :, ::1] A
    cdef const floating[:, :, ::1] U
    if fn != NULL:
        A = A_arr
        if A.shape[0] != N or A.shape[1] != T or A.shape[2] != width:
            raise ValueError("soft_backward: A has the wrong shape")
        if not summed:
            U = U_arr
            if U.shape[0] != N or U.shape[1] != T or U.shape[2] != GH:
                raise ValueError("soft_backward: U has the wrong shape")
    dA_arr = np.empty((N, T, GH), dtype=dtype)
    dU_arr = dA_arr if summed else np.empty((N, T, GH), dtype=dtype)  # a summed cell's u gradient is a's
    dstate_arr = np.zeros((S, N, H), dtype=dtype)  # the gradient of the state at the step being undone
    hprev_arr = np.empty((N, T, H), dtype=dtype)  # the h each step read: h0, then h shifted one step
    dq_arr = np.empty((N, T, P), dtype=dtype)
    dbeta_arr = np.empty((N, T, D), dtype=dtype)
    dg_arr = np.empty((N, D), dtype=dtype)
    # Without context_grad a placeholder of one element, never written.
    dV_arr = np.zeros((N if context_grad else 1, L if context_grad else 1, D if context_grad else 1), dtype=dtype)
    dkeys_arr = np.zeros((N, L, P), dtype=dtype)
    dalpha_arr = np.empty(L, dtype=dtype)  # one row's, work space of the row backward
    dz_arr = np.empty(D, dtype=dtype)
    grads = {"dx": (N, T, W), "Wx": (W, GH), "Wh": (H, GH), "b": (GH,), "Wz": (D, GH), "Ua": (D, P),
             "Wa": (H, P), "ba": (P,), "wa": (P,), "Wbeta": (H, D), "bbeta": (D,)}
    grads = {name: np.zeros(shape, dtype=dtype) for name, shape in grads.items()}
    cdef floating[:, :, ::1] dA = dA_arr, dU = dU_arr, hprev = hprev_arr, dstate = dstate_arr
    cdef floating[:, :, ::1] dq = dq_arr, dbeta = dbeta_arr, dV = dV_arr, dkeys = dkeys_arr, dx = grads["dx"]
    cdef floating[:, ::1] dg = dg_arr, dWx = grads["Wx"], dWh = grads["Wh"], dWz = grads["Wz"]
    cdef floating[:, ::1] dUa = grads["Ua"], dWa = grads["Wa"], dWbeta = grads["Wbeta"]
    cdef floating[::1] db = grads["b"], dba = grads["ba"], dwa = grads["wa"], dbbeta = grads["bbeta"]
    cdef floating[::1] dalpha = dalpha_arr, dz = dz_arr
    cdef floating *dV_row = NULL
    cdef void *packed[8]  # Wh^T, Wa^T, Wbeta^T, Wz^T
    memset(packed, 0, sizeof(packed))
    cdef uint32_t *work = NULL
    cdef const floating *a = NULL
    cdef const floating *u = NULL
    cdef size_t row_bytes = H * sizeof(floating)
    cdef bint fits = True
    try:
        with nogil:
            if bf16 or panel_enabled():
                packed[0] = _packed(bf16, &Wh[0, 0], GH, H, GH, True)
                packed[1] = _packed(bf16, &Wa[0, 0], P, H, P, True)
                packed[2] = _packed(bf16, &Wbeta[0, 0], D, H, D, True)
                packed[3] = _packed(bf16, &Wz[0, 0], GH, D, GH, True)
            if bf16:
                work = bf16_work(N, max(GH, max(P, D)))
                fits = _all_packed(packed, 0, 3, work)
        if not fits:
            raise MemoryError(short_of_memory("soft_backward"))
        for t in range(T - 1, -1, -1):
            if fn != NULL:
                a = &A[0, t, 0]
                if not summed:
                    u = &U[0, t, 0]
            undo_step(code, fn, t, dh, s0, states, a, u, width, dstate, dA, dU, saved)
            with nogil:
                # The glimpse's gradient through Wz, then the mechanism's step undone row by row.
                zero_rows(&dg[0, 0], N, D, D)
                _product(bf16, N, D, GH, &dA[0, t, 0], T * GH, &Wz[0, 0], True, packed[3], work, &dg[0, 0], D)
                for n in range(N):
                    memcpy(&dalpha[0], &dalphas[n, t, 0], L * sizeof(floating))
                    if context_grad:
                        dV_row = &dV[n, 0, 0]
                    if floating is float:
                        ck_soft_backward_row_f(L, D, P, &V[n, 0, 0], &wa[0], &s[n, t, 0, 0], &alpha[n, t, 0],
                                               &z[n, t, 0], &beta[n, t, 0], &dg[n, 0], &dalpha[0], &dbeta[n, t, 0],
                                               &dq[n, t, 0], dV_row, &dkeys[n, 0, 0], &dwa[0], &dz[0])
                    else:
                        ck_soft_backward_row_d(L, D, P, &V[n, 0, 0], &wa[0], &s[n, t, 0, 0], &alpha[n, t, 0],
                                               &z[n, t, 0], &beta[n, t, 0], &dg[n, 0], &dalpha[0], &dbeta[n, t, 0],
                                               &dq[n, t, 0], dV_row, &dkeys[n, 0, 0], &dwa[0], &dz[0])
                # What step t sends back to h_{t-1}: through Wh, and through the mechanism's Wa and Wbeta.
                _product(bf16, N, H, GH, &dU[0, t, 0], T * GH, &Wh[0, 0], True, packed[0], work, &dstate[0, 0, 0], H)
                _product(bf16, N, H, P, &dq[0, t, 0], T * P, &Wa[0, 0], True, packed[1], work, &dstate[0, 0, 0], H)
                _product(bf16, N, H, D, &dbeta[0, t, 0], T * D, &Wbeta[0, 0], True, packed[2], work,
                         &dstate[0, 0, 0], H)
    finally:
        _free_all(packed, 8)
        free(work)

    with nogil:
        for n in range(N):
            memcpy(&hprev[n, 0, 0], &s0[0, n, 0], row_bytes)
            for t in range(1, T):
                memcpy(&hprev[n, t, 0], &states[0, n, t - 1, 0], row_bytes)
        fits = mixed_matmul(bf16, False, True, N * T, W, GH, &dA[0, 0, 0], GH, &Wx[0, 0], GH, False, &dx[0, 0, 0], W)
        fits = fits and mixed_matmul(bf16, True, False, W, GH, N * T, &x[0, 0, 0], W, &dA[0, 0, 0], GH, False,
                                     &dWx[0, 0], GH)
        fits = fits and mixed_matmul(bf16, True, False, H, GH, N * T, &hprev[0, 0, 0], H, &dU[0, 0, 0], GH, False,
                                     &dWh[0, 0], GH)
        fits = fits and mixed_matmul(bf16, True, False, D, GH, N * T, &g[0, 0, 0], D, &dA[0, 0, 0], GH, False,
                                     &dWz[0, 0], GH)
        fits = fits and mixed_matmul(bf16, True, False, H, P, N * T, &hprev[0, 0, 0], H, &dq[0, 0, 0], P, False,
                                     &dWa[0, 0], P)
        fits = fits and mixed_matmul(bf16, True, False, H, D, N * T, &hprev[0, 0, 0], H, &dbeta[0, 0, 0], D, False,
                                     &dWbeta[0, 0], D)
        # The keys V Ua: their gradient, summed over the steps, reaches Ua and V once.
        fits = fits and mixed_matmul(bf16, True, False, D, P, N * L, &V[0, 0, 0], D, &dkeys[0, 0, 0], P, False,
                                     &dUa[0, 0], P)
        if context_grad:
            fits = fits and mixed_matmul(bf16, False, True, N * L, D, P, &dkeys[0, 0, 0], P, &Ua[0, 0], P, True,
                                         &dV[0, 0, 0], D)
        for n in range(N):
            for t in range(T):
                add(&db[0], &dA[n, t, 0], GH)
                add(&dba[0], &dq[n, t, 0], P)
                add(&dbbeta[0], &dbeta[n, t, 0], D)
    if not fits:
        raise MemoryError(short_of_memory("soft_backward"))
    dx_arr = grads.pop("dx")
    return dx_arr, dstate_arr, dV_arr if context_grad else None, grads


# ---------------------------------------------------------------------- one step, and greedy decoding


def soft_step(const floating[:, ::1] x, const floating[:, :, ::1] state, const floating[:, :, ::1] V,
              const floating[:, :, ::1] keys, const int64_t[::1] images, Weights weights, CellCode code):
    """One step for M rows: x (M, W), state (S, M, H), the regions V (I, L, D) and keys (I, L, P) of I images, and
    images (M,) the image of each row (each in [0, I)) -> (the next state (S, M, H), alpha (M, L))."""
    cdef Py_ssize_t M = x.shape[0], W = x.shape[1], S = code.states, H = state.shape[2]
    cdef Py_ssize_t I = V.shape[0], L = V.shape[1], D = V.shape[2], P = keys.shape[2], GH = code.gates * H, n
    if M < 1 or L < 1 or state.shape[0] != S or state.shape[1] != M or images.shape[0] != M \
            or keys.shape[0] != I or keys.shape[1] != L or not _sizes_fit(code, W, H, D, P, weights):
        raise ValueError("soft_step: inconsistent or empty shapes")
    for n in range(M):
        if not 0 <= images[n] < I:
            raise ValueError(f"soft_step: images[{n}] = {images[n]} is not an image row in [0, {I})")
    dtype = np.float32 if floating is float else np.float64
    cdef floating kind = 0
    cdef bint bf16 = weights.bf16
    check_bf16(bf16, kind, "soft_step")
    cdef void *fn = forward_function(code, kind)
    cdef Py_ssize_t width = code.kept * H if fn != NULL else GH
    cdef bint summed = code.summed
    cdef const floating[:, ::1] Wx = weights.Wx, Wh = weights.Wh, Wz = weights.Wz, Wa = weights.Wa
    cdef const floating[:, ::1] Wbeta = weights.Wbeta
    cdef const floating[::1] b = weights.b, ba = weights.ba, wa = weights.wa, bbeta = weights.bbeta
    A_arr = np.empty((M, width), dtype=dtype)
    U_arr = None if summed else np.empty((M, GH), dtype=dtype)
    next_arr = np.empty((S, M, H), dtype=dtype)
    alpha_arr = np.empty((M, L), dtype=dtype)
    s_arr = np.empty((M, L * P), dtype=dtype)
    q_arr = np.empty((M, P), dtype=dtype)
    z_arr, beta_arr, g_arr = [np.empty((M, D), dtype=dtype) for _ in range(3)]
    cdef floating[:, ::1] A = A_arr, alpha = alpha_arr, s = s_arr, q = q_arr, z = z_arr, beta = beta_arr
    cdef floating[:, ::1] g = g_arr
    cdef floating[:, ::1] U
    cdef floating[:, :, ::1] nxt = next_arr
    cdef floating *u = NULL
    if not summed:
        U = U_arr
        u = &U[0, 0]
    cdef void *packed[8]
    memset(packed, 0, sizeof(packed))
    cdef uint32_t *work = NULL
    cdef bint fits = True
    try:
        with nogil:
            if bf16:
                _pack_forward(Wx, Wh, Wz, Wa, Wbeta, packed, False, bf16)
                work = bf16_work(M, max(H, D))
                fits = _all_packed(packed, 1, 4, work)
            elif large_on_panels():  # as matmul would for these single products
                _pack_forward(Wx, Wh, Wz, Wa, Wbeta, packed, False, bf16)
            bias_rows(&A[0, 0], &b[0], M, GH, width)
            fits = fits and mixed_matmul(bf16, False, False, M, GH, W, &x[0, 0], W, &Wx[0, 0], GH, True, &A[0, 0],
                                         width)
            if fits:
                _attend_rows(M, H, L, D, P, GH, &state[0, 0, 0], H, &V[0, 0, 0], &keys[0, 0, 0], &images[0],
                             &Wa[0, 0], &ba[0], &wa[0], &Wbeta[0, 0], &bbeta[0], &Wz[0, 0], packed, bf16, work,
                             &q[0, 0], &s[0, 0], L * P, &alpha[0, 0], L, &z[0, 0], &beta[0, 0], &g[0, 0], D, &A[0, 0],
                             width)
                step_rows(fn, M, H, S, GH, summed, &Wh[0, 0], NULL if bf16 else <floating *> packed[1],
                          <uint16_t *> packed[1] if bf16 else NULL, work, &A[0, 0], width, u, GH, &state[0, 0, 0],
                          M * H, H, &nxt[0, 0, 0], M * H, H)
        if not fits:
            raise MemoryError(short_of_memory("soft_step"))
    finally:
        _free_all(packed, 8)
        free(work)
    if fn == NULL:
        numpy_forward_step(code, A_arr, U_arr, np.asarray(state), next_arr)
    return next_arr, alpha_arr


def soft_greedy(const floating[:, :, ::1] s0, const floating[:, :, ::1] V, const floating[:, :, ::1] keys,
                const floating[:, ::1] W_embed, Weights weights, const floating[:, ::1] W_vocab,
                const floating[::1] b_vocab, int64_t start, int64_t end, int32_t null, Py_ssize_t max_length,
                CellCode code):
    """Greedy decoding from the state s0 (S, N, H) over the regions V (N, L, D) with keys (N, L, P), word vectors
    W_embed (V, W) and the output layer W_vocab (H, V), b_vocab (V,) -> (captions (N, max_length) int32, alphas
    (N, max_length, L): the weights of the step that chose each word, zeros after the caption's end), as
    _engine.gated_greedy with the attention step of soft_step."""
    cdef Py_ssize_t S = code.states, N = s0.shape[1], H = s0.shape[2], NV = W_embed.shape[0], W = W_embed.shape[1]
    cdef Py_ssize_t L = V.shape[1], D = V.shape[2], P = keys.shape[2], GH = code.gates * H
    if N < 1 or NV < 1 or L < 1 or max_length < 1 or s0.shape[0] != S or V.shape[0] != N or keys.shape[0] != N \
            or keys.shape[1] != L or not _sizes_fit(code, W, H, D, P, weights) or W_vocab.shape[0] != H \
            or W_vocab.shape[1] != NV or b_vocab.shape[0] != NV or not 0 <= start < NV or end >= NV:
        raise ValueError("soft_greedy: inconsistent or empty shapes, or a word id outside the vocabulary")
    dtype = np.float32 if floating is float else np.float64
    cdef floating kind = 0
    cdef bint bf16 = weights.bf16
    check_bf16(bf16, kind, "soft_greedy")
    cdef void *fn = forward_function(code, kind)
    cdef Py_ssize_t width = code.kept * H if fn != NULL else GH
    cdef bint summed = code.summed
    cdef const floating[:, ::1] Wx = weights.Wx, Wh = weights.Wh, Wz = weights.Wz, Wa = weights.Wa
    cdef const floating[:, ::1] Wbeta = weights.Wbeta
    cdef const floating[::1] b = weights.b, ba = weights.ba, wa = weights.wa, bbeta = weights.bbeta
    captions_arr = np.full((N, max_length), null, dtype=np.int32)
    alphas_arr = np.zeros((N, max_length, L), dtype=dtype)
    state_arr = np.empty((2, S, N, H), dtype=dtype)  # this step's state and the next, in turn
    x_arr = np.empty((N, W), dtype=dtype)
    A_arr = np.empty((N, width), dtype=dtype)
    U_arr = None if summed else np.empty((N, GH), dtype=dtype)
    scores_arr = np.empty((N, NV), dtype=dtype)
    alpha_arr = np.empty((N, L), dtype=dtype)
    s_arr = np.empty((N, L * P), dtype=dtype)
    q_arr = np.empty((N, P), dtype=dtype)
    z_arr, beta_arr, g_arr = [np.empty((N, D), dtype=dtype) for _ in range(3)]
    words_arr = np.full(N, start, dtype=np.int64)
    alive_arr = np.ones(N, dtype=np.uint8)
    cdef int32_t[:, ::1] captions = captions_arr
    cdef floating[:, :, ::1] alphas = alphas_arr
    cdef floating[:, :, :, ::1] state = state_arr
    cdef floating[:, ::1] x = x_arr, A = A_arr, scores = scores_arr, alpha = alpha_arr, s = s_arr, q = q_arr
    cdef floating[:, ::1] z = z_arr, beta = beta_arr, g = g_arr
    cdef floating[:, ::1] U
    cdef int64_t[::1] words = words_arr
    cdef unsigned char[::1] alive = alive_arr
    cdef floating *u = NULL
    if not summed:
        U = U_arr
        u = &U[0, 0]
    cdef void *packed[8]  # Wx, Wh, Wz, Wa, Wbeta, W_vocab
    memset(packed, 0, sizeof(packed))
    cdef uint32_t *work = NULL
    cdef Py_ssize_t t, n, cur = 0
    cdef bint any_alive = True
    cdef bint fits = True
    try:
        with nogil:
            if bf16 or panel_enabled():
                _pack_forward(Wx, Wh, Wz, Wa, Wbeta, packed, True, bf16)
                packed[5] = _packed(bf16, &W_vocab[0, 0], H, NV, NV, False)
            if bf16:
                work = bf16_work(N, max(W, max(H, D)))
                fits = _all_packed(packed, 0, 5, work)
            memcpy(&state[0, 0, 0, 0], &s0[0, 0, 0], S * N * H * sizeof(floating))
        if not fits:
            raise MemoryError(short_of_memory("soft_greedy"))
        for t in range(max_length):
            with nogil:
                for n in range(N):
                    memcpy(&x[n, 0], &W_embed[words[n], 0], W * sizeof(floating))
                bias_rows(&A[0, 0], &b[0], N, GH, width)
                _product(bf16, N, GH, W, &x[0, 0], W, &Wx[0, 0], False, packed[0], work, &A[0, 0], width)
                _attend_rows(N, H, L, D, P, GH, &state[cur, 0, 0, 0], H, &V[0, 0, 0], &keys[0, 0, 0], NULL,
                             &Wa[0, 0], &ba[0], &wa[0], &Wbeta[0, 0], &bbeta[0], &Wz[0, 0], packed, bf16, work,
                             &q[0, 0], &s[0, 0], L * P, &alpha[0, 0], L, &z[0, 0], &beta[0, 0], &g[0, 0], D, &A[0, 0],
                             width)
                step_rows(fn, N, H, S, GH, summed, &Wh[0, 0], NULL if bf16 else <floating *> packed[1],
                          <uint16_t *> packed[1] if bf16 else NULL, work, &A[0, 0], width, u, GH,
                          &state[cur, 0, 0, 0], N * H, H, &state[1 - cur, 0, 0, 0], N * H, H)
            if fn == NULL:
                numpy_forward_step(code, A_arr, U_arr, state_arr[cur], state_arr[1 - cur])
            with nogil:
                cur = 1 - cur
                memset(&scores[0, 0], 0, N * NV * sizeof(floating))
                _product(bf16, N, NV, H, &state[cur, 0, 0, 0], H, &W_vocab[0, 0], False, packed[5], work,
                         &scores[0, 0], NV)
                any_alive = False
                for n in range(N):
                    words[n] = argmax_bias(&scores[n, 0], &b_vocab[0], NV)
                    if alive[n]:
                        captions[n, t] = <int32_t> words[n]
                        memcpy(&alphas[n, t, 0], &alpha[n, 0], L * sizeof(floating))
                        if words[n] == end:
                            alive[n] = 0
                    any_alive = any_alive or alive[n]
            if end >= 0 and not any_alive:
                break
    finally:
        _free_all(packed, 8)
        free(work)
    return captions_arr, alphas_arr
