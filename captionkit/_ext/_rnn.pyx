"""Vanilla RNN sequence forward/backward, single step and greedy decoding, with the time loop in C.

Private: call these through captionkit.kernels, which checks dtypes, shapes, contiguity and sizes first. Work that
does not depend on the recurrence is taken out of the loop into single large products: x @ Wx for every step at once
before the forward loop; dx, dWx, dWh and db after the backward loop. Inside the loops only h @ Wh (and its
transpose) remains, one product per step on strided row blocks, so no step copies data. On CPUs with AVX-512 that
product runs on Wh packed once per call (_panel.h) instead of BLAS, which would repack Wh at every step.
"""
import numpy as np
from cython cimport floating
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from captionkit._ext._blas cimport gemm, panel_enabled
from captionkit._ext._panel cimport packed_copy, product
from libc.stdint cimport int32_t, int64_t

from captionkit._ext._vecmath cimport add, argmax_bias, tanh_bias, tanh_grad


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
    cdef floating *packed = NULL
    with nogil:
        if panel_enabled():
            packed = packed_copy(&Wh[0, 0], H, H, H, False)
        # Input projections of all N*T positions in one product, written where the hidden states go.
        gemm(False, False, N * T, H, D, 1, &x[0, 0, 0], D, &Wx[0, 0], H, 0, &h[0, 0, 0], H)
        for t in range(T):
            if t == 0:
                prev, ld_prev = &h0[0, 0], H
            else:
                prev, ld_prev = &h[0, t - 1, 0], T * H
            # Step t of every sequence: rows h[:, t] sit T*H apart.
            product(N, H, H, prev, ld_prev, &Wh[0, 0], False, packed, &h[0, t, 0], T * H)
            for n in range(N):
                tanh_bias(&h[n, t, 0], &b[0], H)
        free(packed)
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
    cdef floating *packed = NULL
    cdef floating[:, :, ::1] da = da_arr, hprev = hprev_arr, dx = dx_arr
    cdef floating[:, ::1] dh0 = dh0_arr, dWx = dWx_arr, dWh = dWh_arr
    cdef floating[::1] db = db_arr
    cdef Py_ssize_t t, n
    cdef size_t row_bytes = H * sizeof(floating)
    with nogil:
        if panel_enabled():
            packed = packed_copy(&Wh[0, 0], H, H, H, True)  # Wh^T, packed from Wh
        memcpy(&da[0, 0, 0], &dh[0, 0, 0], N * T * row_bytes)
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                # What step t+1 sends back through Wh adds to the loss's own gradient of h_t.
                product(N, H, H, &da[0, t + 1, 0], T * H, &Wh[0, 0], True, packed, &da[0, t, 0], T * H)
            for n in range(N):
                tanh_grad(&da[n, t, 0], &h[n, t, 0], H)
        memset(&dh0[0, 0], 0, N * row_bytes)
        product(N, H, H, &da[0, 0, 0], T * H, &Wh[0, 0], True, packed, &dh0[0, 0], H)
        free(packed)

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


def rnn_greedy(const floating[:, ::1] h0, const floating[:, ::1] W_embed, const floating[:, ::1] Wx,
               const floating[:, ::1] Wh, const floating[::1] b, const floating[:, ::1] W_vocab,
               const floating[::1] b_vocab, int64_t start, int64_t end, int32_t null, Py_ssize_t max_length):
    """Greedy decoding from h0 (N, H) with word vectors W_embed (V, W), the RNN's Wx (W, H), Wh (H, H), b (H,) and
    the output layer W_vocab (H, V), b_vocab (V,) -> captions (N, max_length) int32.

    Step t embeds each row's last word (start at t = 0), takes one RNN step, and picks the best-scoring word; a row
    that has produced ``end`` keeps ``null`` from then on, and decoding stops once every row has (end < 0: never).
    Every matrix is packed once for all the steps when the panel products are enabled.
    """
    cdef Py_ssize_t N = h0.shape[0], H = h0.shape[1], V = W_embed.shape[0], W = W_embed.shape[1]
    if N < 1 or H < 1 or V < 1 or W < 1 or max_length < 1 or Wx.shape[0] != W or Wx.shape[1] != H \
            or Wh.shape[0] != H or Wh.shape[1] != H or b.shape[0] != H or W_vocab.shape[0] != H \
            or W_vocab.shape[1] != V or b_vocab.shape[0] != V or not 0 <= start < V or end >= V:
        raise ValueError("rnn_greedy: inconsistent or empty shapes, or a word id outside the vocabulary")
    dtype = np.float32 if floating is float else np.float64
    captions_arr = np.full((N, max_length), null, dtype=np.int32)
    state_arr = np.empty((2, N, H), dtype=dtype)  # this step's hidden state and the next, in turn
    x_arr = np.empty((N, W), dtype=dtype)
    scores_arr = np.empty((N, V), dtype=dtype)
    words_arr = np.full(N, start, dtype=np.int64)
    alive_arr = np.ones(N, dtype=np.uint8)
    cdef int32_t[:, ::1] captions = captions_arr
    cdef floating[:, :, ::1] state = state_arr
    cdef floating[:, ::1] x = x_arr, scores = scores_arr
    cdef int64_t[::1] words = words_arr
    cdef unsigned char[::1] alive = alive_arr
    cdef floating *packed_Wx = NULL
    cdef floating *packed_Wh = NULL
    cdef floating *packed_vocab = NULL
    cdef Py_ssize_t t, n, cur = 0
    cdef bint any_alive
    with nogil:
        if panel_enabled():
            packed_Wx = packed_copy(&Wx[0, 0], W, H, H, False)
            packed_Wh = packed_copy(&Wh[0, 0], H, H, H, False)
            packed_vocab = packed_copy(&W_vocab[0, 0], H, V, V, False)
        memcpy(&state[0, 0, 0], &h0[0, 0], N * H * sizeof(floating))
        for t in range(max_length):
            for n in range(N):
                memcpy(&x[n, 0], &W_embed[words[n], 0], W * sizeof(floating))
            memset(&state[1 - cur, 0, 0], 0, N * H * sizeof(floating))
            product(N, H, W, &x[0, 0], W, &Wx[0, 0], False, packed_Wx, &state[1 - cur, 0, 0], H)
            product(N, H, H, &state[cur, 0, 0], H, &Wh[0, 0], False, packed_Wh, &state[1 - cur, 0, 0], H)
            cur = 1 - cur
            for n in range(N):
                tanh_bias(&state[cur, n, 0], &b[0], H)
            memset(&scores[0, 0], 0, N * V * sizeof(floating))
            product(N, V, H, &state[cur, 0, 0], H, &W_vocab[0, 0], False, packed_vocab, &scores[0, 0], V)
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
        free(packed_Wx)
        free(packed_Wh)
        free(packed_vocab)
    return captions_arr
