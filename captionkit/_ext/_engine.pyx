"""The gated recurrence engine: sequence forward and backward, one step, and greedy decoding for every cell of the
form "input pre-activations a = x_t Wx + b, recurrent pre-activations u = h_{t-1} Wh, then a pointwise update of
the state" (pointwise.pxd says what the pointwise part receives).

Private: call these through captionkit.kernels, which checks every array first. Sequence forward, single step and
greedy decoding run each time step through one function, step_rows (the recurrent product and the pointwise
part); they differ only in where the input part x_t Wx + b comes from. The engine does every matrix
product: x Wx + b for all steps at once before the loop, h_{t-1} Wh at each step on Wh packed once per call
(_panel.h, CPUs with AVX-512; BLAS elsewhere), and after the backward loop dx, dWx, dWh and db as single large
products. Between the products it calls the cell's pointwise part once per row: a C function from the cell's
capsules, without the GIL; or, for a cell written in numpy only, the cell's numpy function once per step on all the
rows, with the GIL. Each call allocates its own buffers, so calls on several threads at once are safe.

Layout: arrays are C-contiguous; a step's rows of an (N, T, width) array sit T * width apart, which the products
take as their row stride, so no step is copied. States are (S, N, H) at one step and (S, N, T, H) over a sequence.
"""
import numpy as np
from cpython.pycapsule cimport PyCapsule_CheckExact, PyCapsule_GetName, PyCapsule_GetPointer
from cython cimport floating
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from captionkit._ext._bf16 cimport bf16_work
from captionkit._ext._blas cimport large_on_panels, panel_enabled
from captionkit._ext._mixed cimport (check_bf16, mixed_matmul, mixed_packed_copy, mixed_product,
                                     short_of_memory)
from captionkit._ext._panel cimport packed_copy
from captionkit._ext._vecmath cimport add, argmax_bias
from captionkit._ext.pointwise cimport backward_d, backward_f, forward_d, forward_f

from captionkit._ext.pointwise import capsule_names

def capsule_problem(capsules):
    """None when ``capsules`` maps each key of pointwise.pxd's ``pointwise_capsules`` to a capsule of the name that
    key's signature has, else a sentence saying what differs."""
    names = capsule_names()
    if not hasattr(capsules, "keys"):
        return f"its compiled pointwise part is {type(capsules).__name__}, not the dict of pointwise_capsules()"
    missing = [key for key in names if key not in capsules]
    if missing:
        return f"its compiled pointwise part has no capsule for {', '.join(missing)}"
    cdef const char *name
    for key, expected in names.items():
        if not PyCapsule_CheckExact(capsules[key]):
            return f"its {key!r} is {type(capsules[key]).__name__}, not a capsule"
        name = PyCapsule_GetName(capsules[key])
        found = None if name == NULL else name.decode("utf-8", "replace")
        if found != expected:
            return (f"its {key} capsule is named {found!r}, but captionkit expects {expected!r}: the function has "
                    "another signature, or was built against another version of captionkit/_ext/pointwise.pxd")
    return None


cdef class CellCode:
    """A gated cell as the engine runs it: G gate blocks, S state arrays, K kept blocks per row and step, whether
    its pointwise part takes a + u summed, and that part as compiled functions (``capsules``, the dict of
    pointwise.pxd's ``pointwise_capsules``) or, when ``capsules`` is None, as numpy callables:
    ``numpy_forward(a, u, prev) -> (next, saved)`` and ``numpy_backward(dnext, saved) -> (da, du, dprev)``."""

    def __init__(self, Py_ssize_t gates, Py_ssize_t states, Py_ssize_t kept, bint summed, numpy_forward,
                 numpy_backward, capsules):
        if gates < 1 or states < 1 or states > MAX_STATES or kept < gates:
            raise ValueError(f"CellCode: need gates >= 1, 1 <= states <= {MAX_STATES} and kept >= gates, got "
                             f"{gates}, {states}, {kept}")
        self.gates, self.states, self.kept, self.summed = gates, states, kept, summed
        self.numpy_forward, self.numpy_backward, self.capsules = numpy_forward, numpy_backward, capsules
        if capsules is None:
            if numpy_forward is None or numpy_backward is None:
                raise ValueError("CellCode: a cell without capsules needs its numpy forward and backward")
            return
        problem = capsule_problem(capsules)
        if problem is not None:
            raise ValueError(f"CellCode: {problem}")
        names = capsule_names()
        self.forward_f32 = PyCapsule_GetPointer(capsules["forward float32"], names["forward float32"].encode())
        self.backward_f32 = PyCapsule_GetPointer(capsules["backward float32"], names["backward float32"].encode())
        self.forward_f64 = PyCapsule_GetPointer(capsules["forward float64"], names["forward float64"].encode())
        self.backward_f64 = PyCapsule_GetPointer(capsules["backward float64"], names["backward float64"].encode())

    @property
    def compiled(self):
        """Whether the pointwise part runs as C functions (else as numpy callbacks)."""
        return self.forward_f32 != NULL


# ---------------------------------------------------------------------- the pointwise part, row by row


cdef void forward_rows(void *fn, Py_ssize_t N, Py_ssize_t H, Py_ssize_t S, floating *a, Py_ssize_t lda,
                        const floating *u, Py_ssize_t ldu, const floating *prev, Py_ssize_t prev_s,
                        Py_ssize_t prev_n, floating *nxt, Py_ssize_t next_s, Py_ssize_t next_n) noexcept nogil:
    """The compiled forward ``fn`` on N rows; state array s of row n starts at prev + s*prev_s + n*prev_n (next
    likewise); u is NULL for summed cells."""
    cdef const floating *prev_rows[MAX_STATES]
    cdef floating *next_rows[MAX_STATES]
    cdef const floating *u_row = NULL
    cdef Py_ssize_t n, s
    for n in range(N):
        for s in range(S):
            prev_rows[s] = prev + s * prev_s + n * prev_n
            next_rows[s] = nxt + s * next_s + n * next_n
        if u != NULL:
            u_row = u + n * ldu
        if floating is float:
            (<forward_f> fn)(H, a + n * lda, u_row, prev_rows, next_rows)
        else:
            (<forward_d> fn)(H, a + n * lda, u_row, prev_rows, next_rows)


cdef void backward_rows(void *fn, Py_ssize_t N, Py_ssize_t H, Py_ssize_t S, const floating *a, Py_ssize_t lda,
                         const floating *u, Py_ssize_t ldu, const floating *prev, Py_ssize_t prev_s,
                         Py_ssize_t prev_n, const floating *nxt, Py_ssize_t next_s, Py_ssize_t next_n,
                         floating *dstate, floating *da, floating *du, Py_ssize_t ldd) noexcept nogil:
    """The compiled backward ``fn`` on N rows (strides as in _forward_rows; dstate is (S, N, H), da and du have row
    stride ldd, du NULL for summed cells)."""
    cdef const floating *prev_rows[MAX_STATES]
    cdef const floating *next_rows[MAX_STATES]
    cdef floating *d_rows[MAX_STATES]
    cdef const floating *u_row = NULL
    cdef floating *du_row = NULL
    cdef Py_ssize_t n, s
    for n in range(N):
        for s in range(S):
            prev_rows[s] = prev + s * prev_s + n * prev_n
            next_rows[s] = nxt + s * next_s + n * next_n
            d_rows[s] = dstate + (s * N + n) * H
        if u != NULL:
            u_row = u + n * ldu
            du_row = du + n * ldd
        if floating is float:
            (<backward_f> fn)(H, a + n * lda, u_row, prev_rows, next_rows, d_rows, da + n * ldd, du_row)
        else:
            (<backward_d> fn)(H, a + n * lda, u_row, prev_rows, next_rows, d_rows, da + n * ldd, du_row)


def _read_only(array):
    view = array.view()
    view.flags.writeable = False
    return view


cdef object numpy_forward_step(CellCode code, a, u, prev, nxt):
    """The numpy forward on views of one step's rows: writes the next state into the S arrays ``nxt`` and returns
    what the function saved for its backward."""
    next_state, saved = code.numpy_forward(_read_only(a), None if u is None else _read_only(u),
                                           tuple(_read_only(p) for p in prev))
    for target, value in zip(nxt, next_state):
        target[...] = value
    return saved


cdef void numpy_backward_step(CellCode code, dstate, saved, da, du):
    """The numpy backward of one step: dstate (S, N, H) holds the state's gradient on entry and the previous
    state's on return; da (and du, None for summed cells) are views of the step's rows."""
    d_a, d_u, dprev = code.numpy_backward(tuple(_read_only(d) for d in dstate), saved)
    da[...] = d_a
    if du is not None:
        du[...] = d_u
    for s in range(code.states):
        if dprev[s] is None:
            dstate[s] = 0
        else:
            dstate[s] = dprev[s]


cdef int undo_step(CellCode code, void *fn, Py_ssize_t t, const floating[:, :, ::1] dh,
                   const floating[:, :, ::1] s0, const floating[:, :, :, ::1] states, const floating *a,
                   const floating *u, Py_ssize_t width, floating[:, :, ::1] dstate, floating[:, :, ::1] dA,
                   floating[:, :, ::1] dU, saved) except -1:
    """The cell's part of undoing step t of a sequence: adds the loss's own gradient of h_t (dh (N, T, H)) to
    dstate (S, N, H), then runs the cell's backward, which leaves the previous state's gradient in dstate and
    writes step t's rows of dA and dU (N, T, G*H; dU is dA for summed cells). The compiled part ``fn`` reads step
    t's rows a and u (row stride T * width and T * G*H; u NULL for summed cells) and the states around the step
    (s0, states (S, N, T, H)); for numpy callbacks (``fn`` NULL) what they saved at step t is saved[t]."""
    cdef Py_ssize_t N = dh.shape[0], T = dh.shape[1], H = dh.shape[2], S = code.states, GH = dA.shape[2], n
    cdef bint summed = code.summed
    cdef const floating *prev
    cdef Py_ssize_t prev_s, prev_n
    with nogil:
        for n in range(N):
            add(&dstate[0, n, 0], &dh[n, t, 0], H)
        if fn != NULL:
            if t == 0:
                prev, prev_s, prev_n = &s0[0, 0, 0], N * H, H
            else:
                prev, prev_s, prev_n = &states[0, 0, t - 1, 0], N * T * H, T * H
            backward_rows(fn, N, H, S, a, T * width, u, T * GH, prev, prev_s, prev_n, &states[0, 0, t, 0],
                          N * T * H, T * H, &dstate[0, 0, 0], &dA[0, t, 0], NULL if summed else &dU[0, t, 0], T * GH)
    if fn == NULL:
        numpy_backward_step(code, np.asarray(dstate), saved[t], np.asarray(dA)[:, t],
                            None if summed else np.asarray(dU)[:, t])
    return 0


cdef void step_rows(void *fn, Py_ssize_t N, Py_ssize_t H, Py_ssize_t S, Py_ssize_t GH, bint summed,
                     const floating *Wh, floating *packed_Wh, const uint16_t *bf16_Wh, uint32_t *work,
                     floating *a, Py_ssize_t lda, floating *u, Py_ssize_t ldu, const floating *prev,
                     Py_ssize_t prev_s, Py_ssize_t prev_n, floating *nxt, Py_ssize_t next_s,
                     Py_ssize_t next_n) noexcept nogil:
    """One time step of N rows whose input part x_t Wx + b is already in ``a`` (row stride lda): adds h_{t-1} Wh
    to it (summed cells) or writes h_{t-1} Wh to u (row stride ldu), on Wh as mixed_product takes it (bf16_Wh and
    its work space for bfloat16, else packed_Wh, else BLAS), then runs the compiled pointwise part ``fn`` from the
    state at prev into nxt (strides as in _forward_rows). With ``fn`` NULL the caller runs the cell's numpy part
    next, on the same a and u."""
    if summed:
        mixed_product(N, GH, H, prev, prev_n, Wh, False, packed_Wh, bf16_Wh, work, a, lda)
    else:
        zero_rows(u, N, GH, ldu)
        mixed_product(N, GH, H, prev, prev_n, Wh, False, packed_Wh, bf16_Wh, work, u, ldu)
    if fn != NULL:
        forward_rows(fn, N, H, S, a, lda, NULL if summed else u, ldu, prev, prev_s, prev_n, nxt, next_s, next_n)


cdef bint _weights_fit(CellCode code, Py_ssize_t W, Py_ssize_t H, const floating[:, ::1] Wx,
                       const floating[:, ::1] Wh):
    """Wx (W, G*H) and Wh (H, G*H) for the cell's G gates, and W, H >= 1."""
    cdef Py_ssize_t GH = code.gates * H
    return W >= 1 and H >= 1 and Wx.shape[0] == W and Wx.shape[1] == GH and Wh.shape[0] == H and Wh.shape[1] == GH


# ---------------------------------------------------------------------- sequence forward and backward


def gated_forward(const floating[:, :, ::1] x, const floating[:, :, ::1] s0, const floating[:, ::1] Wx,
                  const floating[:, ::1] Wh, const floating[::1] b, CellCode code, bint bf16=False):
    """x (N, T, W), s0 (S, N, H) the initial state, Wx (W, G*H), Wh (H, G*H), b (G*H,) ->
    (states (S, N, T, H), A (N, T, K*H), U (N, T, G*H), saved list). With ``bf16`` (float32 only) the products
    take their inputs rounded to bfloat16 (_mixed.pxd); the pointwise part sees float32 as always.

    For a compiled pointwise part, A holds what its forward left of each step's rows and U the recurrent
    pre-activations (None for summed cells), and saved is None. For numpy callbacks, saved holds what they saved for
    their backward, which needs nothing else, so A and U are None (what the callbacks saved of them stays alive).
    """
    cdef Py_ssize_t N = x.shape[0], T = x.shape[1], W = x.shape[2], S = code.states, H = s0.shape[2]
    cdef Py_ssize_t GH = code.gates * H, t
    if N < 1 or T < 1 or s0.shape[0] != S or s0.shape[1] != N or not _weights_fit(code, W, H, Wx, Wh) \
            or b.shape[0] != GH:
        raise ValueError("gated_forward: inconsistent or empty shapes")
    dtype = np.float32 if floating is float else np.float64
    cdef floating kind = 0
    check_bf16(bf16, kind, "gated_forward")
    cdef void *fn = forward_function(code, kind)
    cdef Py_ssize_t width = code.kept * H if fn != NULL else GH
    cdef bint summed = code.summed
    A_arr = np.empty((N, T, width), dtype=dtype)
    U_arr = None if summed else np.empty((N, T, GH), dtype=dtype)
    states_arr = np.empty((S, N, T, H), dtype=dtype)
    s0_arr = np.asarray(s0)
    saved = None if fn != NULL else [None] * T
    cdef floating[:, :, ::1] A = A_arr
    cdef floating[:, :, ::1] U
    if not summed:
        U = U_arr
    cdef floating[:, :, :, ::1] states = states_arr
    cdef floating *packed = NULL
    cdef uint16_t *bf16_Wh = NULL
    cdef uint32_t *work = NULL
    cdef floating *u = NULL
    cdef const floating *prev
    cdef Py_ssize_t prev_s, prev_n
    cdef bint fits = True
    try:
        with nogil:
            if bf16:
                bf16_Wh = mixed_packed_copy(bf16, &Wh[0, 0], H, GH, GH, False)
                work = bf16_work(N, H)
                fits = bf16_Wh != NULL and work != NULL
            elif panel_enabled():
                packed = packed_copy(&Wh[0, 0], H, GH, GH, False)
            # Every step's x_t Wx + b in one product, written where the step's pre-activations go.
            bias_rows(&A[0, 0, 0], &b[0], N * T, GH, width)
            fits = fits and mixed_matmul(bf16, False, False, N * T, GH, W, &x[0, 0, 0], W, &Wx[0, 0], GH, True,
                                         &A[0, 0, 0], width)
        if not fits:
            raise MemoryError(short_of_memory("gated_forward"))
        for t in range(T):
            with nogil:
                if t == 0:
                    prev, prev_s, prev_n = &s0[0, 0, 0], N * H, H
                else:
                    prev, prev_s, prev_n = &states[0, 0, t - 1, 0], N * T * H, T * H
                if not summed:
                    u = &U[0, t, 0]
                step_rows(fn, N, H, S, GH, summed, &Wh[0, 0], packed, bf16_Wh, work, &A[0, t, 0], T * width, u,
                          T * GH, prev, prev_s, prev_n, &states[0, 0, t, 0], N * T * H, T * H)
            if fn == NULL:
                prev_views = s0_arr if t == 0 else states_arr[:, :, t - 1]
                saved[t] = numpy_forward_step(code, A_arr[:, t], None if summed else U_arr[:, t], prev_views,
                                          states_arr[:, :, t])
    finally:
        free(packed)
        free(bf16_Wh)
        free(work)
    if fn == NULL:
        return states_arr, None, None, saved
    return states_arr, A_arr, U_arr, saved


def gated_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x, const floating[:, :, ::1] s0,
                   const floating[:, ::1] Wx, const floating[:, ::1] Wh, const floating[:, :, :, ::1] states,
                   A_arr, U_arr, saved, CellCode code, bint bf16=False):
    """Backward of gated_forward given its inputs and outputs; dh (N, T, H) is the loss's gradient of every h_t
    (not counting the recurrence) -> dx (N, T, W), dh0 (N, H), dWx (W, G*H), dWh (H, G*H), db (G*H,). ``bf16``
    as for gated_forward, for the backward's products."""
    cdef Py_ssize_t N = x.shape[0], T = x.shape[1], W = x.shape[2], S = code.states, H = s0.shape[2]
    cdef Py_ssize_t GH = code.gates * H, t, n
    cdef floating kind = 0
    check_bf16(bf16, kind, "gated_backward")
    cdef void *fn = backward_function(code, kind)
    cdef Py_ssize_t width = code.kept * H
    cdef bint summed = code.summed
    if N < 1 or T < 1 or s0.shape[0] != S or s0.shape[1] != N or not _weights_fit(code, W, H, Wx, Wh) \
            or dh.shape[0] != N or dh.shape[1] != T or dh.shape[2] != H or states.shape[0] != S or states.shape[1] != N \
            or states.shape[2] != T or states.shape[3] != H \
            or (fn == NULL and (saved is None or len(saved) != T)) \
            or (fn != NULL and (A_arr is None or (U_arr is None) != summed)):
        raise ValueError("gated_backward: inconsistent or empty shapes, or a cache of another cell")
    dtype = np.float32 if floating is float else np.float64
    cdef const floating[:, :, ::1] A
    cdef const floating[:, :, ::1] U
    if fn != NULL:
        A = A_arr
        if A.shape[0] != N or A.shape[1] != T or A.shape[2] != width:
            raise ValueError("gated_backward: A has the wrong shape")
        if not summed:
            U = U_arr
            if U.shape[0] != N or U.shape[1] != T or U.shape[2] != GH:
                raise ValueError("gated_backward: U has the wrong shape")
    dA_arr = np.empty((N, T, GH), dtype=dtype)
    dU_arr = dA_arr if summed else np.empty((N, T, GH), dtype=dtype)  # a summed cell's u gradient is a's
    dstate_arr = np.zeros((S, N, H), dtype=dtype)  # the gradient of the state at the step being undone
    hprev_arr = np.empty((N, T, H), dtype=dtype)  # the h each step read: h0, then h shifted one step
    dx_arr = np.empty((N, T, W), dtype=dtype)
    dWx_arr = np.empty((W, GH), dtype=dtype)
    dWh_arr = np.empty((H, GH), dtype=dtype)
    db_arr = np.zeros(GH, dtype=dtype)
    cdef floating[:, :, ::1] dA = dA_arr, dU = dU_arr, hprev = hprev_arr, dx = dx_arr
    cdef floating[:, :, ::1] dstate = dstate_arr
    cdef floating[:, ::1] dWx = dWx_arr, dWh = dWh_arr
    cdef floating[::1] db = db_arr
    cdef floating *packed = NULL
    cdef uint16_t *bf16_WhT = NULL
    cdef uint32_t *work = NULL
    cdef const floating *a = NULL
    cdef const floating *u = NULL
    cdef size_t row_bytes = H * sizeof(floating)
    cdef bint fits = True
    try:
        with nogil:
            if bf16:
                bf16_WhT = mixed_packed_copy(bf16, &Wh[0, 0], GH, H, GH, True)
                work = bf16_work(N, GH)
                fits = bf16_WhT != NULL and work != NULL
            elif panel_enabled():
                packed = packed_copy(&Wh[0, 0], GH, H, GH, True)  # Wh^T (G*H, H), packed from Wh
        if not fits:
            raise MemoryError(short_of_memory("gated_backward"))
        for t in range(T - 1, -1, -1):
            if fn != NULL:
                a = &A[0, t, 0]
                if not summed:
                    u = &U[0, t, 0]
            undo_step(code, fn, t, dh, s0, states, a, u, width, dstate, dA, dU, saved)
            with nogil:
                # What step t sends back to h_{t-1} through Wh.
                mixed_product(N, H, GH, &dU[0, t, 0], T * GH, &Wh[0, 0], True, packed, bf16_WhT, work,
                              &dstate[0, 0, 0], H)
    finally:
        free(packed)
        free(bf16_WhT)
        free(work)

    with nogil:
        for n in range(N):
            memcpy(&hprev[n, 0, 0], &s0[0, n, 0], row_bytes)
            if T > 1:
                for t in range(1, T):
                    memcpy(&hprev[n, t, 0], &states[0, n, t - 1, 0], row_bytes)
        fits = mixed_matmul(bf16, False, True, N * T, W, GH, &dA[0, 0, 0], GH, &Wx[0, 0], GH, False, &dx[0, 0, 0], W)
        fits = fits and mixed_matmul(bf16, True, False, W, GH, N * T, &x[0, 0, 0], W, &dA[0, 0, 0], GH, False,
                                     &dWx[0, 0], GH)
        fits = fits and mixed_matmul(bf16, True, False, H, GH, N * T, &hprev[0, 0, 0], H, &dU[0, 0, 0], GH, False,
                                     &dWh[0, 0], GH)
        for n in range(N):
            for t in range(T):
                add(&db[0], &dA[n, t, 0], GH)
    if not fits:
        raise MemoryError(short_of_memory("gated_backward"))
    return dx_arr, dstate_arr[0].copy(), dWx_arr, dWh_arr, db_arr


# ---------------------------------------------------------------------- one step, and greedy decoding


def gated_step(const floating[:, ::1] x, const floating[:, :, ::1] state, const floating[:, ::1] Wx,
               const floating[:, ::1] Wh, const floating[::1] b, CellCode code, bint bf16=False):
    """One step for every row: x (N, W), state (S, N, H) -> the next state (S, N, H); ``bf16`` as for
    gated_forward."""
    cdef Py_ssize_t N = x.shape[0], W = x.shape[1], S = code.states, H = state.shape[2]
    cdef Py_ssize_t GH = code.gates * H
    if N < 1 or state.shape[0] != S or state.shape[1] != N or not _weights_fit(code, W, H, Wx, Wh) \
            or b.shape[0] != GH:
        raise ValueError("gated_step: inconsistent or empty shapes")
    dtype = np.float32 if floating is float else np.float64
    cdef floating kind = 0
    check_bf16(bf16, kind, "gated_step")
    cdef void *fn = forward_function(code, kind)
    cdef Py_ssize_t width = code.kept * H if fn != NULL else GH
    cdef bint summed = code.summed
    A_arr = np.empty((N, width), dtype=dtype)
    U_arr = None if summed else np.empty((N, GH), dtype=dtype)
    next_arr = np.empty((S, N, H), dtype=dtype)
    cdef floating[:, ::1] A = A_arr
    cdef floating[:, ::1] U
    if not summed:
        U = U_arr
    cdef floating[:, :, ::1] nxt = next_arr
    cdef floating *u = NULL
    cdef floating *packed = NULL
    cdef uint16_t *bf16_Wh = NULL
    cdef uint32_t *work = NULL
    cdef bint fits = True
    if not summed:
        u = &U[0, 0]
    try:
        with nogil:
            bias_rows(&A[0, 0], &b[0], N, GH, width)
            fits = mixed_matmul(bf16, False, False, N, GH, W, &x[0, 0], W, &Wx[0, 0], GH, True, &A[0, 0], width)
            if bf16:
                bf16_Wh = mixed_packed_copy(bf16, &Wh[0, 0], H, GH, GH, False)
                work = bf16_work(N, H)
                fits = fits and bf16_Wh != NULL and work != NULL
            elif large_on_panels():  # as matmul would for this one product
                packed = packed_copy(&Wh[0, 0], H, GH, GH, False)
            if fits:
                step_rows(fn, N, H, S, GH, summed, &Wh[0, 0], packed, bf16_Wh, work, &A[0, 0], width, u, GH,
                          &state[0, 0, 0], N * H, H, &nxt[0, 0, 0], N * H, H)
        if not fits:
            raise MemoryError(short_of_memory("gated_step"))
    finally:
        free(packed)
        free(bf16_Wh)
        free(work)
    if fn == NULL:
        numpy_forward_step(code, A_arr, U_arr, np.asarray(state), next_arr)
    return next_arr


def gated_greedy(const floating[:, :, ::1] s0, const floating[:, ::1] W_embed, const floating[:, ::1] Wx,
                 const floating[:, ::1] Wh, const floating[::1] b, const floating[:, ::1] W_vocab,
                 const floating[::1] b_vocab, int64_t start, int64_t end, int32_t null, Py_ssize_t max_length,
                 CellCode code, bint bf16=False):
    """Greedy decoding from the state s0 (S, N, H) with word vectors W_embed (V, W), the cell's Wx, Wh, b and the
    output layer W_vocab (H, V), b_vocab (V,) -> captions (N, max_length) int32.

    Step t embeds each row's last word (start at t = 0), takes one step of the cell, and picks the best-scoring
    word of h; a row that has produced ``end`` keeps ``null`` from then on, and decoding stops once every row has
    (end < 0: never). Wx, Wh and W_vocab are packed once for all the steps when the panel products are enabled,
    and with ``bf16`` (as for gated_forward) rounded to bfloat16 once.
    """
    cdef Py_ssize_t S = code.states, N = s0.shape[1], H = s0.shape[2], V = W_embed.shape[0], W = W_embed.shape[1]
    cdef Py_ssize_t GH = code.gates * H
    if N < 1 or V < 1 or max_length < 1 or s0.shape[0] != S or not _weights_fit(code, W, H, Wx, Wh) \
            or b.shape[0] != GH or W_vocab.shape[0] != H or W_vocab.shape[1] != V or b_vocab.shape[0] != V \
            or not 0 <= start < V or end >= V:
        raise ValueError("gated_greedy: inconsistent or empty shapes, or a word id outside the vocabulary")
    dtype = np.float32 if floating is float else np.float64
    cdef floating kind = 0
    check_bf16(bf16, kind, "gated_greedy")
    cdef void *fn = forward_function(code, kind)
    cdef Py_ssize_t width = code.kept * H if fn != NULL else GH
    cdef bint summed = code.summed
    captions_arr = np.full((N, max_length), null, dtype=np.int32)
    state_arr = np.empty((2, S, N, H), dtype=dtype)  # this step's state and the next, in turn
    x_arr = np.empty((N, W), dtype=dtype)
    A_arr = np.empty((N, width), dtype=dtype)
    U_arr = None if summed else np.empty((N, GH), dtype=dtype)
    scores_arr = np.empty((N, V), dtype=dtype)
    words_arr = np.full(N, start, dtype=np.int64)
    alive_arr = np.ones(N, dtype=np.uint8)
    cdef int32_t[:, ::1] captions = captions_arr
    cdef floating[:, :, :, ::1] state = state_arr
    cdef floating[:, ::1] x = x_arr, A = A_arr, scores = scores_arr
    cdef floating[:, ::1] U
    if not summed:
        U = U_arr
    cdef int64_t[::1] words = words_arr
    cdef unsigned char[::1] alive = alive_arr
    cdef floating *packed_Wx = NULL
    cdef floating *packed_Wh = NULL
    cdef floating *packed_vocab = NULL
    cdef uint16_t *bf16_Wx = NULL
    cdef uint16_t *bf16_Wh = NULL
    cdef uint16_t *bf16_vocab = NULL
    cdef uint32_t *work = NULL
    cdef floating *u = NULL
    cdef Py_ssize_t t, n, cur = 0
    cdef bint any_alive = True
    if not summed:
        u = &U[0, 0]
    try:
        with nogil:
            if bf16:
                bf16_Wx = mixed_packed_copy(bf16, &Wx[0, 0], W, GH, GH, False)
                bf16_Wh = mixed_packed_copy(bf16, &Wh[0, 0], H, GH, GH, False)
                bf16_vocab = mixed_packed_copy(bf16, &W_vocab[0, 0], H, V, V, False)
                work = bf16_work(N, W if W > H else H)
            elif panel_enabled():
                packed_Wx = packed_copy(&Wx[0, 0], W, GH, GH, False)
                packed_Wh = packed_copy(&Wh[0, 0], H, GH, GH, False)
                packed_vocab = packed_copy(&W_vocab[0, 0], H, V, V, False)
            memcpy(&state[0, 0, 0, 0], &s0[0, 0, 0], S * N * H * sizeof(floating))
        if bf16 and (bf16_Wx == NULL or bf16_Wh == NULL or bf16_vocab == NULL or work == NULL):
            raise MemoryError(short_of_memory("gated_greedy"))
        for t in range(max_length):
            with nogil:
                for n in range(N):
                    memcpy(&x[n, 0], &W_embed[words[n], 0], W * sizeof(floating))
                bias_rows(&A[0, 0], &b[0], N, GH, width)
                mixed_product(N, GH, W, &x[0, 0], W, &Wx[0, 0], False, packed_Wx, bf16_Wx, work, &A[0, 0], width)
                step_rows(fn, N, H, S, GH, summed, &Wh[0, 0], packed_Wh, bf16_Wh, work, &A[0, 0], width, u, GH,
                          &state[cur, 0, 0, 0], N * H, H, &state[1 - cur, 0, 0, 0], N * H, H)
            if fn == NULL:
                numpy_forward_step(code, A_arr, U_arr, state_arr[cur], state_arr[1 - cur])
            with nogil:
                cur = 1 - cur
                memset(&scores[0, 0], 0, N * V * sizeof(floating))
                mixed_product(N, V, H, &state[cur, 0, 0, 0], H, &W_vocab[0, 0], False, packed_vocab, bf16_vocab,
                              work, &scores[0, 0], V)
                any_alive = False
                for n in range(N):
                    words[n] = argmax_bias(&scores[n, 0], &b_vocab[0], V)
                    if alive[n]:
                        captions[n, t] = <int32_t> words[n]
                        if words[n] == end:
                            alive[n] = 0
                    any_alive = any_alive or alive[n]
            if end >= 0 and not any_alive:
                break
    finally:
        free(packed_Wx)
        free(packed_Wh)
        free(packed_vocab)
        free(bf16_Wx)
        free(bf16_Wh)
        free(bf16_vocab)
        free(work)
    return captions_arr
