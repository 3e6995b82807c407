"""The output layer in C: the fused softmax loss and per-caption log-likelihood of training and scoring, and the
decoding steps (greedy argmax, beam search's top k) that never return the (N, V) scores."""
import numpy as np

from captionkit.checks import integer, number
from captionkit.kernels._bf16 import _bf16_products
from captionkit.kernels._built import _require_built, is_available
from captionkit.kernels._checks import _check_size, _expect_shape, _float_array, _ids, _mask
from captionkit.kernels._layers import _affine_args

if is_available():  # else every kernel stops at _require_built()
    from captionkit._ext import _decode, _softmax

__all__ = ["affine_argmax", "affine_log_softmax_topk", "temporal_softmax_affine_loss", "temporal_softmax_affine_nll"]


# ---------------------------------------------------------------------- training and scoring


def temporal_softmax_affine_loss(h, w, b, y, mask, batch=None, row_weights=None, *, precision="fp32"):
    """The output layer of a captioning model, forward and backward in one call.

    h (N, T, H) hidden states, w (H, V), b (V,), y (N, T) integer targets in [0, V), mask (N, T) bool ->
    ``(loss, dh (N, T, H), dw (H, V), db (V,))``: the numbers of :func:`captionkit.layers.temporal_affine_forward`
    then :func:`captionkit.layers.temporal_softmax_loss` (the loss sums the unmasked positions and divides by N)
    then :func:`captionkit.layers.temporal_affine_backward`, computed for the unmasked positions only and without
    a second (N, T, V) array for the gradient of the scores. ``batch`` (default N) replaces N as the divisor, for
    h that is a shard of a larger batch: the shards' losses and gradients then add up to the whole batch's.
    ``row_weights`` (N,) finite reals (default ones) multiply each caption's loss and gradients.
    ``precision`` "bf16" (float32 arrays, a CPU with AVX512-BF16) rounds the inputs of every product to bfloat16 and
    sums in float32 (as the same argument of the :mod:`captionkit.layers` function emulates); the softmax stays
    float32.
    """
    _require_built()
    h, w, b, targets, flat_mask = _output_layer_args(h, w, b, y, mask)
    N, T, H = h.shape
    batch = N if batch is None else integer("batch", batch)
    weights = np.ones(N, dtype=h.dtype) if row_weights is None else _row_weights(row_weights, N, h.dtype)
    loss, dh, dw, db = _softmax.affine_softmax_loss(h.reshape(N * T, H), w, b, targets, flat_mask, batch,
                                                    np.repeat(weights, T), _bf16_products(precision, h.dtype))
    return loss, dh.reshape(N, T, H), dw, db


def _row_weights(row_weights, rows, dtype):
    """``row_weights`` as a contiguous (rows,) array of ``dtype``; ValueError naming it when its shape is not
    (rows,) or a value is not finite."""
    weights = np.asarray(row_weights)
    if weights.shape != (rows,) or not np.issubdtype(weights.dtype, np.number) or not np.isfinite(weights).all():
        raise ValueError(f"row_weights must be {rows} finite numbers, one per caption (shape ({rows},)), got "
                         f"shape {weights.shape} and dtype {weights.dtype}")
    return np.ascontiguousarray(weights, dtype=dtype)


def _output_layer_args(h, w, b, y, mask):
    """Checked h (N, T, H), w (H, V), b (V,), and the targets y (N, T) and mask (N, T) flattened."""
    h = _float_array("h", h, 3)
    w = _float_array("w", w, 2, ("h", h))
    b = _float_array("b", b, 1, ("h", h))
    N, T, H = h.shape
    _expect_shape("w", w, (H, w.shape[1]), "h")
    V = w.shape[1]
    _expect_shape("b", b, (V,), "w")
    _check_size("scores", (N * T, V))
    return h, w, b, _ids("y", y, V, (N, T), "h and w"), _mask("mask", mask, (N, T), "h")


def temporal_softmax_affine_nll(h, w, b, y, mask, *, precision="fp32"):
    """Negative log-likelihood of each caption under the output layer: h (N, T, H), w (H, V), b (V,), y (N, T)
    integer targets in [0, V), mask (N, T) bool -> (N,) float64, the sum over t with mask of
    ``-log softmax(h[n, t] @ w + b)[y[n, t]]``. :func:`temporal_softmax_affine_loss`'s forward alone, per caption;
    ``precision`` as there."""
    _require_built()
    h, w, b, targets, flat_mask = _output_layer_args(h, w, b, y, mask)
    N, T, H = h.shape
    return _softmax.affine_nll(h.reshape(N * T, H), w, b, targets, flat_mask, T, _bf16_products(precision, h.dtype))


# ---------------------------------------------------------------------- decoding


def _decode_args(h, w, b):
    h, w, b = _affine_args(h, w, b, "h")
    _check_size("scores", (h.shape[0], w.shape[1]))
    return h, w, b


def affine_argmax(h, w, b, *, precision="fp32"):
    """Greedy choice of the next word: h (N, H), w (H, V), b (V,) -> (N,) int64 ids of the best score h @ w + b.

    The same as ``(h @ w + b).argmax(axis=1)`` (the first index on ties, the first NaN if any) without returning
    the (N, V) scores. ``precision`` as for :func:`temporal_softmax_affine_loss`.
    """
    _require_built()
    h, w, b = _decode_args(h, w, b)
    return _decode.affine_argmax(h, w, b, _bf16_products(precision, h.dtype))


def affine_log_softmax_topk(h, w, b, k, *, precision="fp32"):
    """Beam-search expansion: h (N, H), w (H, V), b (V,), k in [1, V] -> (logp (N, k), ids (N, k) int64).

    Row n holds the k largest log-probabilities of ``log_softmax(h[n] @ w + b)`` in descending order and their word
    ids (ties: the lower id first; NaN ranks last), i.e. the first k columns of a stable argsort of their negation.
    ``precision`` as for :func:`temporal_softmax_affine_loss`.
    """
    _require_built()
    h, w, b = _decode_args(h, w, b)
    k = integer("k", k, maximum=w.shape[1])
    return _decode.affine_log_softmax_topk(h, w, b, k, _bf16_products(precision, h.dtype))


def affine_sample(h, w, b, uniforms, temperature=1.0, *, precision="fp32"):
    """Random sampling's next word: h (N, H), w (H, V), b (V,), uniforms (N,) in [0, 1), temperature > 0 ->
    (ids (N,) int64, log-probabilities (N,) float64 of those words under the tempered softmax).

    Row n takes the first word whose cumulative probability ``softmax((h[n] @ w + b) / temperature)`` exceeds
    ``uniforms[n]`` (inverse transform sampling), as :func:`captionkit.layers.affine_sample` does. ``precision`` as
    for :func:`temporal_softmax_affine_loss`.
    """
    _require_built()
    h, w, b = _decode_args(h, w, b)
    uniforms = _uniforms(uniforms, h.shape[0])
    temperature = number("temperature", temperature, above=True)
    return _decode.affine_sample(h, w, b, uniforms, temperature, _bf16_products(precision, h.dtype))


def _uniforms(uniforms, rows):
    values = np.asarray(uniforms)
    if values.shape != (rows,) or not np.issubdtype(values.dtype, np.floating) \
            or not ((values >= 0) & (values < 1)).all():
        raise ValueError(f"uniforms must be {rows} floats in [0, 1), one per row of h, got shape {values.shape} and "
                         f"dtype {values.dtype}")
    return np.ascontiguousarray(values, dtype=np.float64)
