"""Numpy GRU layers: one step for decoding, and a sequence forward/backward for training.

Gates are three blocks in the order r, z, n, computed from a = x @ Wx + b and u = h @ Wh:

    r = sigmoid(a_r + u_r)    z = sigmoid(a_z + u_z)    n = tanh(a_n + r * u_n)    h' = (1 - z) * n + z * h

Shapes: N minibatch, T time steps, W input (word-vector) size, H hidden size.
"""
import numpy as np

from captionkit.layers import sigmoid

__all__ = ["gru_step_forward", "gru_forward", "gru_backward"]


def _gates(a, u, H):
    """Activated gates r, z, n (each N x H) from the input part a (N, 3H) and recurrent part u (N, 3H)."""
    r = sigmoid(a[:, :H] + u[:, :H])
    z = sigmoid(a[:, H : 2 * H] + u[:, H : 2 * H])
    n = np.tanh(a[:, 2 * H :] + r * u[:, 2 * H :])
    return r, z, n


def gru_step_forward(x, prev_h, Wx, Wh, b):
    """One GRU step: x (N, W), prev_h (N, H), Wx (W, 3H), Wh (H, 3H), b (3H,) -> next_h (N, H)."""
    H = prev_h.shape[1]
    r, z, n = _gates(x @ Wx + b, prev_h @ Wh, H)
    return (1 - z) * n + z * prev_h


def gru_forward(x, h0, Wx, Wh, b):
    """GRU over a sequence: x (N, T, W), h0 (N, H), Wx (W, 3H), Wh (H, 3H), b (3H,) -> h (N, T, H), cache."""
    N, T, W = x.shape
    H = h0.shape[1]
    # The input half of every gate does not depend on h, so it is one large product for all steps.
    a = (x.reshape(N * T, W) @ Wx + b).reshape(N, T, 3 * H)
    dtype = a.dtype
    h = np.empty((N, T, H), dtype=dtype)
    gates = np.empty((N, T, 3 * H), dtype=dtype)  # r, z, n after activation
    u_n = np.empty((N, T, H), dtype=dtype)  # h_{t-1} @ Wh_n, which n's gradient needs
    prev_h = h0
    for t in range(T):
        u = prev_h @ Wh
        r, z, n = _gates(a[:, t], u, H)
        prev_h = (1 - z) * n + z * prev_h
        h[:, t] = prev_h
        gates[:, t] = np.concatenate([r, z, n], axis=1)
        u_n[:, t] = u[:, 2 * H :]
    return h, (x, h0, Wx, Wh, h, gates, u_n)


def gru_backward(dh, cache):
    """Backward of :func:`gru_forward`: dh (N, T, H) -> dx (N, T, W), dh0 (N, H), dWx, dWh, db."""
    x, h0, Wx, Wh, h, gates, u_n = cache
    N, T, H = h.shape
    W = x.shape[2]
    prev_h = np.concatenate([h0[:, None, :], h[:, :-1]], axis=1)  # h_{t-1} for every t
    da = np.empty_like(gates)  # gradient of a = x @ Wx + b
    du = np.empty_like(gates)  # gradient of u = h_{t-1} @ Wh
    dnext = np.zeros((N, H), dtype=h.dtype)
    for t in reversed(range(T)):
        r, z, n = gates[:, t, :H], gates[:, t, H : 2 * H], gates[:, t, 2 * H :]
        dh_t = dh[:, t] + dnext
        dn = dh_t * (1 - z) * (1 - n**2)
        dz = dh_t * (prev_h[:, t] - n) * z * (1 - z)
        dr = dn * u_n[:, t] * r * (1 - r)
        da[:, t] = np.concatenate([dr, dz, dn], axis=1)
        du[:, t] = np.concatenate([dr, dz, dn * r], axis=1)  # u_n enters n scaled by r
        dnext = dh_t * z + du[:, t] @ Wh.T
    da_flat, du_flat = da.reshape(N * T, 3 * H), du.reshape(N * T, 3 * H)
    dx = (da_flat @ Wx.T).reshape(N, T, W)
    dWx = x.reshape(N * T, W).T @ da_flat
    dWh = prev_h.reshape(N * T, H).T @ du_flat
    db = da_flat.sum(axis=0)
    return dx, dnext, dWx, dWh, db
