"""Numpy reference LSTM layers, with the signatures of the CS231n captioning assignment.

Gates are four blocks of the pre-activation a = x @ Wx + prev_h @ Wh + b, in the order i, f, o, g:
i, f, o = sigmoid(.), g = tanh(.); next_c = f * prev_c + i * g; next_h = o * tanh(next_c).

Shapes: N minibatch, T time steps, D input size, H hidden size. Written apart from the cell's pointwise part, these
functions are the oracle that captionkit's tests hold the recurrence engine's LSTM to, on both backends.
"""
import numpy as np

from captionkit.layers import sigmoid

__all__ = ["lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward"]


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step.

    x (N, D), prev_h (N, H), prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,) -> next_h (N, H), next_c (N, H), cache.
    """
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H : 2 * H])
    o = sigmoid(a[:, 2 * H : 3 * H])
    g = np.tanh(a[:, 3 * H :])
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Backward of one LSTM step: dnext_h (N, H), dnext_c (N, H) ->
    dx (N, D), dprev_h (N, H), dprev_c (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c = cache
    # next_h = o * tanh(next_c) routes gradient into next_c as well as into o.
    dc = dnext_c + dnext_h * o * (1.0 - tanh_c**2)
    da = np.concatenate(
        [
            dc * g * i * (1.0 - i),  # di, through the sigmoid
            dc * prev_c * f * (1.0 - f),  # df
            dnext_h * tanh_c * o * (1.0 - o),  # do
            dc * i * (1.0 - g**2),  # dg, through the tanh
        ],
        axis=1,
    )
    dx = da @ Wx.T
    dprev_h = da @ Wh.T
    dprev_c = dc * f
    dWx = x.T @ da
    dWh = prev_h.T @ da
    db = da.sum(axis=0)
    return dx, dprev_h, dprev_c, dWx, dWh, db


def lstm_forward(x, h0, Wx, Wh, b):
    """LSTM over a whole sequence, starting from hidden state h0 and cell state zero.

    x (N, T, D), h0 (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,) -> h (N, T, H), cache.
    """
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.empty((N, T, H), dtype=np.result_type(x, h0, Wx, Wh, b))
    prev_h, prev_c = h0, np.zeros_like(h0)
    step_caches = []
    for t in range(T):
        prev_h, prev_c, step_cache = lstm_step_forward(x[:, t, :], prev_h, prev_c, Wx, Wh, b)
        h[:, t, :] = prev_h
        step_caches.append(step_cache)
    return h, step_caches


def lstm_backward(dh, cache):
    """Backward of :func:`lstm_forward`: dh (N, T, H), the upstream gradient of every hidden state ->
    dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    step_caches = cache
    N, T, H = dh.shape
    x0, _, _, Wx, Wh = step_caches[0][:5]
    dx = np.empty((N, T, x0.shape[1]), dtype=dh.dtype)
    dWx = np.zeros_like(Wx)
    dWh = np.zeros_like(Wh)
    db = np.zeros(4 * H, dtype=dh.dtype)
    dprev_h = np.zeros((N, H), dtype=dh.dtype)
    dprev_c = np.zeros((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        # Step t's hidden state feeds the loss (dh[:, t]) and step t+1 (dprev_h); its cell state only step t+1.
        dx[:, t, :], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(
            dh[:, t, :] + dprev_h, dprev_c, step_caches[t]
        )
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db
