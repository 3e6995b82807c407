"""The assignment's layers in C: affine, word embedding, the vanilla RNN (on the gated recurrence engine) and the
vectorised activations that compiled pointwise parts use."""
import operator

import numpy as np

from captionkit.kernels._bf16 import _bf16_products
from captionkit.kernels._built import _require_built, is_available
from captionkit.kernels._checks import _FLOATS, _check_size, _expect_shape, _float_array, _ids, _unpack
from captionkit.kernels._recurrence import _gated_args, gated_backward, gated_forward, gated_step
from captionkit.pointwise import Pointwise

if is_available():  # else every kernel stops at _require_built()
    from captionkit._ext import _affine, _embedding, _rnn, pointwise

__all__ = ["affine_backward", "affine_forward", "rnn_backward", "rnn_forward", "rnn_step_forward", "sigmoid", "tanh",
           "word_embedding_backward", "word_embedding_forward"]


# ---------------------------------------------------------------------- affine


def _affine_args(x, w, b, x_name):
    """Check x (N, D), w (D, M), b (M,): 2-D, 2-D and 1-D arrays of one dtype with matching sizes."""
    x = _float_array(x_name, x, 2)
    w = _float_array("w", w, 2, (x_name, x))
    b = _float_array("b", b, 1, (x_name, x))
    _expect_shape("w", w, (x.shape[1], w.shape[1]), x_name)
    _expect_shape("b", b, (w.shape[1],), "w")
    return x, w, b


def affine_forward(x, w, b, *, precision="fp32"):
    """Affine layer: x (N, D), w (D, M), b (M,) -> out (N, M) = x @ w + b, cache.

    As :func:`captionkit.layers.affine_forward` for a 2-D x.

    ``precision`` "bf16" (float32 arrays, a CPU with AVX512-BF16) rounds the inputs of every product to bfloat16
    and sums in float32, as :func:`captionkit.layers.affine_forward` with the same argument emulates.
    """
    _require_built()
    x, w, b = _affine_args(x, w, b, "x")
    _check_size("out", (x.shape[0], w.shape[1]))
    return _affine.affine_forward(x, w, b, _bf16_products(precision, x.dtype)), (x, w, b)


def affine_backward(dout, cache, input_grad=True, *, precision="fp32"):
    """Backward of :func:`affine_forward`: dout (N, M) -> dx (N, D), dw (D, M), db (M,).

    With ``input_grad=False`` dx is not computed and None stands in its place (for inputs that are data).
    ``precision`` as for :func:`affine_forward`.
    """
    _require_built()
    x, w, _ = _unpack(cache, 3, "affine_forward")
    x = _float_array("cache x", x, 2)
    w = _float_array("cache w", w, 2, ("cache x", x))
    _expect_shape("cache w", w, (x.shape[1], w.shape[1]), "cache x")
    dout = _float_array("dout", dout, 2, ("cache x", x))
    _expect_shape("dout", dout, (x.shape[0], w.shape[1]), "cache x and cache w")
    return _affine.affine_backward(dout, x, w, bool(input_grad), _bf16_products(precision, x.dtype))


# ---------------------------------------------------------------------- embedding


def word_embedding_forward(x, W):
    """Look up word vectors: x (N, T) integer ids in [0, V), W (V, D) -> out (N, T, D), cache.

    The cache ``(ids, W.shape, W.dtype)`` has the layout of :func:`captionkit.layers.word_embedding_forward`'s.
    """
    _require_built()
    W = _float_array("W", W, 2)
    ids = _ids("x", x, W.shape[0], (None, None), "W")
    N, T = x.shape
    _check_size("out", (N, T, W.shape[1]))
    out = _embedding.embedding_forward(ids, W).reshape(N, T, W.shape[1])
    return out, (ids.reshape(N, T), W.shape, W.dtype)


def word_embedding_backward(dout, cache):
    """Backward of :func:`word_embedding_forward`: dout (N, T, D) -> dW (V, D); repeated words add up."""
    _require_built()
    x, W_shape, W_dtype = _unpack(cache, 3, "word_embedding_forward")
    try:
        V, D = (operator.index(n) for n in W_shape)
        dtype = np.dtype(W_dtype)
    except (TypeError, ValueError):
        raise TypeError("cache must be the tuple that word_embedding_forward returned") from None
    if dtype not in _FLOATS or V < 1 or D < 1:
        raise ValueError(f"cache holds W of shape {W_shape} and dtype {dtype}: not a float32/float64 matrix")
    _check_size("dW", (V, D))
    ids = _ids("cache x", x, V, (None, None), "cache W shape")
    dout = _float_array("dout", dout, 3)
    if dout.dtype != dtype:
        raise TypeError(f"dout has dtype {dout.dtype} but W had {dtype}; one call takes one dtype")
    _expect_shape("dout", dout, (*x.shape, D), "cache x and cache W shape")
    return _embedding.embedding_backward(ids, dout.reshape(-1, D), V)


# ---------------------------------------------------------------------- activations


def _activation_input(x):
    """A C-contiguous float32/float64 copy of the array x, for the in-place activations."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"x must be float32 or float64, got dtype {x.dtype}")
    return np.array(x, order="C")


def sigmoid(x):
    """The vectorised logistic sigmoid that compiled pointwise parts get from captionkit/_ext/pointwise.pxd, on a
    copy of x (float32 or float64, any shape): about 2e-7 relative error in float32, 2 ulps in float64; never NaN
    for a number (below -88 / -709 it gives about exp(-88) / exp(-709)); NaN stays NaN."""
    _require_built()
    y = _activation_input(x)
    pointwise.sigmoid_inplace(y.reshape(-1))
    return y


def tanh(x):
    """The vectorised tanh that compiled pointwise parts get from captionkit/_ext/pointwise.pxd, on a copy of x
    (float32: about 2e-7 relative error; float64: libm's); NaN stays NaN."""
    _require_built()
    y = _activation_input(x)
    pointwise.tanh_inplace(y.reshape(-1))
    return y


# ---------------------------------------------------------------------- vanilla RNN: the assignment's layers


def _rnn_cell():
    """The built-in vanilla RNN as the engine runs it: one gate, tanh (its compiled pointwise part, _ext/_rnn)."""
    return Pointwise("rnn", gates=1, capsules=_rnn.CAPSULES)


def rnn_forward(x, h0, Wx, Wh, b):
    """Vanilla RNN over a sequence: x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,) -> h (N, T, H), cache.

    h[:, t] = tanh(x[:, t] @ Wx + h[:, t-1] @ Wh + b), with h[:, -1] meaning h0: :func:`gated_forward` with the
    built-in RNN's pointwise part. The cache is a :class:`GatedCache` for :func:`rnn_backward`.
    """
    _require_built()
    return gated_forward(x, h0, Wx, Wh, b, _rnn_cell())


def rnn_backward(dh, cache):
    """Backward of :func:`rnn_forward`: dh (N, T, H), the loss's gradient of every hidden state ->
    dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,)."""
    return gated_backward(dh, cache)


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One RNN step: x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H), cache.

    The cache ``(x, prev_h, Wx, Wh, next_h)`` is the one :func:`captionkit.layers.rnn_step_backward` takes.
    """
    _require_built()
    rnn = _rnn_cell()
    _gated_args(x, prev_h, Wx, Wh, b, rnn, x_ndim=2, h0_name="prev_h")  # errors name the assignment's arguments
    (next_h,) = gated_step(x, (prev_h,), Wx, Wh, b, rnn)
    return next_h, (x, prev_h, Wx, Wh, next_h)
