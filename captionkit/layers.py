"""Numpy reference layers for recurrent captioning models.

These are the functions of the CS231n captioning assignment (``cs231n/rnn_layers.py``) with the same signatures,
shapes and conventions, written for reading: each forward returns ``(out, cache)`` and each backward takes the
upstream gradient and that cache. They are the oracle that every compiled kernel is tested against.

Shapes use: N minibatch, T time steps, D input size, H hidden size, V vocabulary size, M output size.
"""
import numpy as np

__all__ = [
    "affine_forward",
    "affine_backward",
    "rnn_step_forward",
    "rnn_step_backward",
    "rnn_forward",
    "rnn_backward",
    "word_embedding_forward",
    "word_embedding_backward",
    "temporal_affine_forward",
    "temporal_affine_backward",
    "temporal_softmax_loss",
    "sigmoid",
]


def affine_forward(x, w, b):
    """Affine layer: x (N, d_1, ..., d_k) flattened to (N, D), w (D, M), b (M,) -> out (N, M)."""
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    """Backward of :func:`affine_forward`: dout (N, M) -> dx (shape of x), dw (D, M), db (M,)."""
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def sigmoid(x):
    """Logistic sigmoid, stable for large |x| (never evaluates exp of a large positive number)."""
    positive = x >= 0
    z = np.exp(np.where(positive, -x, x))
    return np.where(positive, 1.0 / (1.0 + z), z / (1.0 + z))


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One vanilla RNN step: next_h = tanh(x @ Wx + prev_h @ Wh + b).

    x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H), cache.
    """
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    """Backward of one RNN step: dnext_h (N, H) -> dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,)."""
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1.0 - next_h**2)  # d tanh(a) / da = 1 - tanh(a)^2
    dx = da @ Wx.T
    dprev_h = da @ Wh.T
    dWx = x.T @ da
    dWh = prev_h.T @ da
    db = da.sum(axis=0)
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """Vanilla RNN over a whole sequence.

    x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,) -> h (N, T, H) of hidden states for every step, cache.
    """
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.empty((N, T, H), dtype=np.result_type(x, h0, Wx, Wh, b))
    step_caches = []
    prev_h = h0
    for t in range(T):
        prev_h, step_cache = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)
        h[:, t, :] = prev_h
        step_caches.append(step_cache)
    return h, step_caches


def rnn_backward(dh, cache):
    """Backward of :func:`rnn_forward`.

    dh (N, T, H) is the upstream gradient of every hidden state (not including the recurrence) ->
    dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    step_caches = cache
    N, T, H = dh.shape
    x0, _, Wx, Wh, _ = step_caches[0]
    dx = np.empty((N, T, x0.shape[1]), dtype=dh.dtype)
    dWx = np.zeros_like(Wx)
    dWh = np.zeros_like(Wh)
    db = np.zeros(H, dtype=dh.dtype)
    dprev_h = np.zeros((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        # Step t's output feeds both the loss (dh[:, t]) and step t+1 (dprev_h from the later step).
        dx[:, t, :], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t, :] + dprev_h, step_caches[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


def word_embedding_forward(x, W):
    """Look up word vectors: x (N, T) integer ids in [0, V), W (V, D) -> out (N, T, D), cache."""
    return W[x], (x, W.shape, W.dtype)


def word_embedding_backward(dout, cache):
    """Backward of :func:`word_embedding_forward`: dout (N, T, D) -> dW (V, D).

    Words that occur several times accumulate their gradients (``np.add.at`` is unbuffered, unlike ``dW[x] += ...``).
    """
    x, W_shape, W_dtype = cache
    dW = np.zeros(W_shape, dtype=W_dtype)
    np.add.at(dW, x, dout)
    return dW


def temporal_affine_forward(x, w, b):
    """Affine layer applied at every time step: x (N, T, D), w (D, M), b (M,) -> out (N, T, M), cache."""
    N, T, D = x.shape
    out = (x.reshape(N * T, D) @ w).reshape(N, T, -1) + b
    return out, (x, w, b)


def temporal_affine_backward(dout, cache):
    """Backward of :func:`temporal_affine_forward`: dout (N, T, M) -> dx (N, T, D), dw (D, M), db (M,)."""
    x, w, b = cache
    N, T, D = x.shape
    M = dout.shape[2]
    dout_flat = dout.reshape(N * T, M)
    dx = (dout_flat @ w.T).reshape(N, T, D)
    dw = x.reshape(N * T, D).T @ dout_flat
    db = dout_flat.sum(axis=0)
    return dx, dw, db


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Softmax cross-entropy at every time step, counting only positions where ``mask`` is true.

    x (N, T, V) scores, y (N, T) integer targets in [0, V), mask (N, T) bool -> loss (scalar), dx (N, T, V).
    The loss is the masked sum over all N*T positions divided by N (not by the number of unmasked positions).
    """
    N, T, V = x.shape
    x_flat = x.reshape(N * T, V)
    y_flat = y.reshape(N * T)
    mask_flat = mask.reshape(N * T)

    shifted = x_flat - x_flat.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    rows = np.arange(N * T)
    loss = -np.sum(mask_flat * log_probs[rows, y_flat]) / N

    dx_flat = np.exp(log_probs)
    dx_flat[rows, y_flat] -= 1
    dx_flat /= N
    dx_flat *= mask_flat[:, None]
    if verbose:
        print("dx_flat: ", dx_flat.shape)
    return loss, dx_flat.reshape(N, T, V)
