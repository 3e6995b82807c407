"""Numpy reference layers for recurrent captioning models.

These are the functions of the CS231n captioning assignment (``cs231n/rnn_layers.py``) with the same signatures,
shapes and conventions, written for reading: each forward returns ``(out, cache)`` and each backward takes the
upstream gradient and that cache. Beyond the assignment, the gated recurrence engine (``gated_forward``,
``gated_backward``, ``gated_step``: any cell of captionkit.pointwise's form) and the output layer's fused forms
(``temporal_softmax_affine_loss``, ``temporal_softmax_affine_nll``, ``affine_argmax``, ``affine_log_softmax_topk``,
``affine_sample``) are here with the signatures of their compiled twins in :mod:`captionkit.kernels`.
These functions are the oracle that every compiled kernel is tested against.

Every function whose arithmetic includes a matrix product of the model's arrays (the affine layer, the fused output
layer, the gated engine) takes a keyword ``precision``: ``"fp32"`` (the default) multiplies in the arrays' own dtype;
``"bf16"`` rounds both inputs of every product to bfloat16 and sums in float32 (:func:`captionkit.precision.product`,
torch.autocast's product), on float32 arrays only, which makes these functions the emulated-bf16 oracle of the
compiled bf16 kernels.
Biases, pointwise cell code, softmax and the loss stay in the arrays' dtype either way. docs/precision.md.

Shapes use: N minibatch, T time steps, D input size, H hidden size, V vocabulary size, M output size.
"""
import numpy as np

from captionkit.precision import product

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
    "temporal_softmax_affine_loss",
    "temporal_softmax_affine_nll",
    "affine_argmax",
    "affine_log_softmax_topk",
    "affine_sample",
    "gated_forward",
    "gated_backward",
    "gated_step",
    "sigmoid",
]


def affine_forward(x, w, b, *, precision="fp32"):
    """Affine layer: x (N, d_1, ..., d_k) flattened to (N, D), w (D, M), b (M,) -> out (N, M)."""
    out = product(x.reshape(x.shape[0], -1), w, precision) + b
    return out, (x, w, b)


def affine_backward(dout, cache, input_grad=True, *, precision="fp32"):
    """Backward of :func:`affine_forward`: dout (N, M) -> dx (shape of x), dw (D, M), db (M,).

    With ``input_grad=False`` dx is not computed and None stands in its place (for inputs that are data).
    """
    x, w, b = cache
    dx = product(dout, w.T, precision).reshape(x.shape) if input_grad else None
    dw = product(x.reshape(x.shape[0], -1).T, dout, precision)
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


def temporal_affine_forward(x, w, b, *, precision="fp32"):
    """Affine layer applied at every time step: x (N, T, D), w (D, M), b (M,) -> out (N, T, M), cache."""
    N, T, D = x.shape
    out = product(x.reshape(N * T, D), w, precision).reshape(N, T, -1) + b
    return out, (x, w, b)


def temporal_affine_backward(dout, cache, *, precision="fp32"):
    """Backward of :func:`temporal_affine_forward`: dout (N, T, M) -> dx (N, T, D), dw (D, M), db (M,)."""
    x, w, b = cache
    N, T, D = x.shape
    M = dout.shape[2]
    dout_flat = dout.reshape(N * T, M)
    dx = product(dout_flat, w.T, precision).reshape(N, T, D)
    dw = product(x.reshape(N * T, D).T, dout_flat, precision)
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


# ---------------------------------------------------------------------- the output layer, fused forms


def temporal_softmax_affine_loss(h, w, b, y, mask, batch=None, row_weights=None, *, precision="fp32"):
    """:func:`temporal_affine_forward`, :func:`temporal_softmax_loss` and :func:`temporal_affine_backward` in one:
    h (N, T, H), w (H, V), b (V,), y (N, T), mask (N, T) -> (loss, dh (N, T, H), dw (H, V), db (V,)).

    ``batch`` (default N) divides the loss instead of N, for h that is a shard of a larger batch. ``row_weights``
    (N,) (default ones) multiply each caption's loss and gradients (self-critical training's advantages).
    """
    scores, cache = temporal_affine_forward(h, w, b, precision=precision)
    if row_weights is not None:  # the mask already multiplies every position's loss and gradient
        mask = mask * np.asarray(row_weights, dtype=scores.dtype)[:, None]
    loss, dscores = temporal_softmax_loss(scores, y, mask)
    dh, dw, db = temporal_affine_backward(dscores, cache, precision=precision)
    N = h.shape[0]
    if batch is not None and batch != N:
        scale = N / batch
        loss, dh, dw, db = loss * scale, dh * scale, dw * scale, db * scale
    return loss, dh, dw, db


def _log_softmax(scores):
    """Row-wise log-softmax over the last axis, in float64, shifted by the maximum so exp cannot overflow."""
    shifted = scores.astype(np.float64) - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def temporal_softmax_affine_nll(h, w, b, y, mask, *, precision="fp32"):
    """Negative log-likelihood of each caption: h (N, T, H), w (H, V), b (V,), y (N, T) targets, mask (N, T) ->
    (N,) float64, the sum over t with mask of -log softmax(h[n, t] @ w + b)[y[n, t]]."""
    log_probs = _log_softmax(temporal_affine_forward(h, w, b, precision=precision)[0])
    picked = np.take_along_axis(log_probs, y[:, :, None], axis=2)[:, :, 0]
    return -np.sum(picked * mask, axis=1)


def affine_argmax(h, w, b, *, precision="fp32"):
    """The best word of each row: h (N, H), w (H, V), b (V,) -> (N,) ids of the largest h @ w + b (first on ties)."""
    return (product(h, w, precision) + b).argmax(axis=1)


def affine_log_softmax_topk(h, w, b, k, *, precision="fp32"):
    """The k best words of each row: h (N, H), w (H, V), b (V,) -> (log-probabilities (N, k) in h's dtype,
    ids (N, k) int64): the words of the k largest scores h @ w + b, best first (the lower id first on ties, so k = 1
    gives :func:`affine_argmax`'s word), with their log-probabilities log_softmax(h @ w + b)."""
    scores = product(h, w, precision) + b
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(_log_softmax(scores), ids, axis=1).astype(h.dtype), ids.astype(np.int64)


def affine_sample(h, w, b, uniforms, temperature=1.0, *, precision="fp32"):
    """Random sampling's next word: h (N, H), w (H, V), b (V,), uniforms (N,) in [0, 1), temperature > 0 ->
    (ids (N,) int64, log-probabilities (N,) float64): row n's word is the first whose cumulative probability
    ``softmax((h[n] @ w + b) / temperature)`` exceeds ``uniforms[n]`` (the last word when rounding leaves none)."""
    log_probs = _log_softmax((product(h, w, precision) + b) / temperature)
    cumulative = np.cumsum(np.exp(log_probs), axis=1)
    ids = np.minimum((cumulative <= np.asarray(uniforms)[:, None]).sum(axis=1), w.shape[1] - 1)
    return ids.astype(np.int64), log_probs[np.arange(len(ids)), ids]


# ---------------------------------------------------------------------- the gated recurrence engine


def gated_forward(x, h0, Wx, Wh, b, pointwise, *, precision="fp32"):
    """Any gated cell (a :class:`captionkit.pointwise.Pointwise`) over a sequence: x (N, T, W), h0 (N, H),
    Wx (W, G*H), Wh (H, G*H), b (G*H,) -> h (N, T, H), cache.

    Step t computes a = x_t Wx + b and u = h_{t-1} Wh (summed cells: a = x_t Wx + h_{t-1} Wh + b, the vanilla
    RNN's order), and the cell's numpy pointwise forward turns them and the state into the next state. The state
    starts as h0 and zeros.
    """
    N, T, _ = x.shape
    x_Wx = product(x, Wx, precision)  # the input half of every step in one product
    state = pointwise.initial_state(h0)
    h = np.empty((N, T, h0.shape[1]), dtype=np.result_type(x, h0, Wx, Wh, b))
    prev_h, saved = np.empty_like(h), []
    for t in range(T):
        prev_h[:, t] = state[0]
        u = product(state[0], Wh, precision)
        if pointwise.summed:
            a, u = x_Wx[:, t] + u + b, None
        else:
            a = x_Wx[:, t] + b
        state, step_saved = pointwise.run_forward(a, u, state)
        h[:, t] = state[0]
        saved.append(step_saved)
    return h, (x, prev_h, Wx, Wh, saved, pointwise)


def gated_backward(dh, cache, *, precision="fp32"):
    """Backward of :func:`gated_forward`: dh (N, T, H), the loss's gradient of every h_t (not counting the
    recurrence) -> dx (N, T, W), dh0 (N, H), dWx (W, G*H), dWh (H, G*H), db (G*H,)."""
    x, prev_h, Wx, Wh, saved, pointwise = cache
    N, T, H = dh.shape
    da = np.empty((N, T, Wx.shape[1]), dtype=dh.dtype)
    du = da if pointwise.summed else np.empty_like(da)
    dnext = [np.zeros((N, H), dtype=dh.dtype) for _ in range(pointwise.states)]
    for t in reversed(range(T)):
        dnext[0] = dnext[0] + dh[:, t]
        da_t, du_t, dprev = pointwise.run_backward(tuple(dnext), saved[t])
        da[:, t] = da_t
        if not pointwise.summed:
            du[:, t] = du_t
        dnext = [np.zeros((N, H), dtype=dh.dtype) if d is None else d for d in dprev]
        dnext[0] = dnext[0] + product(du[:, t], Wh.T, precision)  # what step t sends back to h_{t-1} through Wh
    da_flat, du_flat = da.reshape(N * T, -1), du.reshape(N * T, -1)
    dx = product(da_flat, Wx.T, precision).reshape(x.shape)
    dWx = product(x.reshape(N * T, -1).T, da_flat, precision)
    dWh = product(prev_h.reshape(N * T, H).T, du_flat, precision)
    return dx, dnext[0], dWx, dWh, da_flat.sum(axis=0)


def gated_step(x, state, Wx, Wh, b, pointwise, *, precision="fp32"):
    """One step of a gated cell for decoding: x (N, W) and the state tuple (S arrays (N, H), h first) -> the next
    state tuple."""
    u = product(state[0], Wh, precision)
    x_Wx = product(x, Wx, precision)
    if pointwise.summed:
        a, u = x_Wx + u + b, None
    else:
        a = x_Wx + b
    return pointwise.run_forward(a, u, state)[0]
