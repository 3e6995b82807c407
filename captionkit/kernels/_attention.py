"""Soft attention on the recurrence engine: any gated cell reading a glimpse of the image's regions at every step
(captionkit.attention's AttendedCell with SoftAttention, whose numpy methods are the reference), each call checked
before it reaches ``captionkit._ext._attend``.

The parameters come as one dict with the names the reference gives them: the cell's ``Wx`` (W, G*H), ``Wh``
(H, G*H), ``b`` (G*H,), and the mechanism's ``att_Wz`` (D, G*H), ``att_Ua`` (D, A), ``att_Wa`` (H, A), ``att_ba``
(A,), ``att_wa`` (A,), ``att_Wbeta`` (H, D), ``att_bbeta`` (D,). States are tuples of S arrays (N, H), h first.
"""
from dataclasses import dataclass

import numpy as np

from captionkit.checks import integer
from captionkit.kernels._bf16 import _bf16_products
from captionkit.kernels._built import _require_built, is_available
from captionkit.kernels._checks import _MAX_ELEMENTS, _check_size, _expect_shape, _float_array, _ids, _word_id
from captionkit.kernels._recurrence import _cell_code, _pointwise

if is_available():  # else every kernel stops at _require_built()
    from captionkit._ext import _attend

__all__ = ["SOFT_PARAMETERS", "SOFT_STEP_PARAMETERS", "SoftAttendedCache", "soft_attended_backward",
           "soft_attended_forward", "soft_attended_greedy_decode", "soft_attended_step", "soft_attention_keys"]

# The engine's parameter names: a step's, in the order of _attend.Weights, and a sequence's, which adds att_Ua
# (the keys' projection; steps read the keys).
SOFT_STEP_PARAMETERS = ("Wx", "Wh", "b", "att_Wz", "att_Wa", "att_ba", "att_wa", "att_Wbeta", "att_bbeta")
SOFT_PARAMETERS = SOFT_STEP_PARAMETERS + ("att_Ua",)


@dataclass(frozen=True)
class SoftAttendedCache:
    """What :func:`soft_attended_backward` needs from :func:`soft_attended_forward`: its inputs, every step's state,
    what the cell's pointwise part kept (A, U, saved as in :class:`GatedCache`) and the mechanism's values per step:
    s (N, T, L, A) the tanh values, ``alphas`` (N, T, L) the weights, z, beta and g (N, T, D)."""

    x: np.ndarray
    s0: np.ndarray
    V: np.ndarray
    params: dict
    states: np.ndarray
    A: np.ndarray | None
    U: np.ndarray | None
    saved: list | None
    s: np.ndarray
    alphas: np.ndarray
    z: np.ndarray
    beta: np.ndarray
    g: np.ndarray
    pointwise: object


def _parameters(params, like, W, H, D, gates, names=SOFT_PARAMETERS):
    """Check the parameters dict against W, H, D and the cell's gates -> the attention size A."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of the cell's and the mechanism's arrays, got {type(params).__name__}")
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(f"params has no {', '.join(missing)}")
    checked = {name: _float_array(f"params[{name!r}]", params[name], 1 if name in ("b", "att_ba", "att_wa",
                                                                                 "att_bbeta") else 2, like)
               for name in names}
    A = checked["att_Wa"].shape[1]
    GH = gates * H
    expected = {"Wx": (W, GH), "Wh": (H, GH), "b": (GH,), "att_Wz": (D, GH), "att_Ua": (D, A), "att_Wa": (H, A),
                "att_ba": (A,), "att_wa": (A,), "att_Wbeta": (H, D), "att_bbeta": (D,)}
    for name in names:
        _expect_shape(f"params[{name!r}]", checked[name], expected[name],
                      f"W={W}, H={H}, D={D}, A={A} (params['att_Wa']) and the cell's {gates} gates")
    return checked, A


def _hidden_size(params, like):
    """H, from params['Wh'] (the other parameters are checked against it)."""
    if not isinstance(params, dict) or "Wh" not in params:
        raise ValueError("params must be a dict holding the cell's 'Wh' and the mechanism's arrays")
    return _float_array("params['Wh']", params["Wh"], 2, like).shape[0]


def _weights(params, precision, dtype):
    return _attend.Weights(*(params[name] for name in SOFT_STEP_PARAMETERS), _bf16_products(precision, dtype))


def _state(state, pointwise, rows, H, like, name="state"):
    """A state tuple of S arrays (rows, H) -> stacked (S, rows, H)."""
    if not isinstance(state, tuple) or len(state) != pointwise.states:
        raise ValueError(f"{name} must be a tuple of {pointwise.states} arrays (h first) for cell "
                         f"{pointwise.name!r}, got {type(state).__name__}"
                         f"{f' of {len(state)}' if isinstance(state, tuple) else ''}")
    for s, array in enumerate(state):
        _expect_shape(f"{name}[{s}]", _float_array(f"{name}[{s}]", array, 2, like), (rows, H), "x and params['Wh']")
    return np.ascontiguousarray(np.stack(state))


def _regions(V, like, what="V"):
    return _float_array(what, V, 3, like)


def soft_attention_keys(V, Ua, *, precision="fp32"):
    """The regions' keys: V (N, L, D) @ Ua (D, A) -> (N, L, A), as SoftAttention.prepare computes them.

    Every function here takes ``precision``: "bf16" (float32 arrays, a CPU with AVX512-BF16) rounds the inputs of
    every matrix product to bfloat16 and sums in float32, as the numpy reference (captionkit.attention) emulates at
    the same precision; the per-region scores, their softmax, the weighted sum and the gate stay float32."""
    _require_built()
    V = _regions(V, None)
    Ua = _float_array("Ua", Ua, 2, ("V", V))
    _expect_shape("Ua", Ua, (V.shape[2], Ua.shape[1]), "V")
    _check_size("keys", (*V.shape[:2], Ua.shape[1]))
    return _attend.soft_keys(V, Ua, _bf16_products(precision, V.dtype))


def soft_attended_forward(x, state0, V, params, pointwise, *, precision="fp32"):
    """A gated cell with soft attention over a sequence: x (N, T, W), state0 the state before the first word, V
    (N, L, D) the regions, ``params`` as the module says, ``pointwise`` the cell's -> h (N, T, H), a
    :class:`SoftAttendedCache` (its ``alphas`` the weights of every step)."""
    _require_built()
    pointwise = _pointwise(pointwise)
    x = _float_array("x", x, 3)
    N, T, W = x.shape
    V = _regions(V, ("x", x))
    _expect_shape("V", V, (N, *V.shape[1:]), "x")
    L, D = V.shape[1:]
    H = _hidden_size(params, ("x", x))
    params, A = _parameters(params, ("x", x), W, H, D, pointwise.gates)
    s0 = _state(state0, pointwise, N, H, ("x", x), "state0")
    for name, shape in (("the states", (pointwise.states, N, T, H)), ("the pre-activations", (N, T, pointwise.kept * H)),
                        ("the tanh values", (N, T, L, A)), ("the keys", (N, L, A))):
        _check_size(name, shape)
    weights = _weights(params, precision, x.dtype)
    keys = _attend.soft_keys(V, params["att_Ua"], weights.bf16)
    states, A_arr, U, saved, s, alphas, z, beta, g = _attend.soft_forward(x, s0, V, keys, weights,
                                                                        _cell_code(pointwise))
    return states[0], SoftAttendedCache(x, s0, V, params, states, A_arr, U, saved, s, alphas, z, beta, g, pointwise)


def soft_attended_backward(dh, cache, dalphas=None, context_grad=True, *, precision="fp32"):
    """Backward of :func:`soft_attended_forward`: dh (N, T, H) the loss's gradient of every h_t (not counting the
    recurrence), dalphas (N, T, L) a penalty's gradient of the weights (None: zeros) -> (dx (N, T, W), dstate0 the
    gradient of state0 (a tuple), dV (N, L, D), or None when ``context_grad`` is False (V is data: the work is
    skipped), grads of every name of ``params``)."""
    _require_built()
    if not isinstance(cache, SoftAttendedCache):
        raise TypeError(f"cache must be the SoftAttendedCache that soft_attended_forward returned, got "
                        f"{type(cache).__name__}")
    code = _cell_code(cache.pointwise)
    x = cache.x
    dh = _float_array("dh", dh, 3, ("cache x", x))
    _expect_shape("dh", dh, cache.states.shape[1:], "the forward's h")
    if dalphas is None:
        dalphas = np.zeros_like(cache.alphas)
    dalphas = _float_array("dalphas", dalphas, 3, ("cache x", x))
    _expect_shape("dalphas", dalphas, cache.alphas.shape, "the forward's weights")
    p = cache.params
    dx, dstate, dV, grads = _attend.soft_backward(dh, dalphas, x, cache.s0, cache.V, p["att_Ua"],
                                                  _weights(p, precision, dh.dtype),
                                                  cache.states, cache.A, cache.U, cache.saved, cache.s, cache.alphas,
                                                  cache.z, cache.beta, cache.g, code, bool(context_grad))
    return dx, tuple(dstate), dV, {name if name in ("Wx", "Wh", "b") else f"att_{name}": value
                                   for name, value in grads.items()}


def soft_attended_step(x, state, V, keys, images, params, pointwise, *, precision="fp32"):
    """One step for M rows: x (M, W), ``state`` a tuple of S arrays (M, H), the regions V (I, L, D) and keys
    (I, L, A) of I images (:func:`soft_attention_keys`), ``images`` (M,) each row's image -> (the next state tuple,
    alpha (M, L))."""
    _require_built()
    pointwise = _pointwise(pointwise)
    x = _float_array("x", x, 2)
    M, W = x.shape
    V = _regions(V, ("x", x))
    I, L, D = V.shape
    H = _hidden_size(params, ("x", x))
    params, A = _parameters(params, ("x", x), W, H, D, pointwise.gates, SOFT_STEP_PARAMETERS)
    keys = _float_array("keys", keys, 3, ("x", x))
    _expect_shape("keys", keys, (I, L, A), "V and params['att_Wa']")
    stacked = _state(state, pointwise, M, H, ("x", x))
    images = _ids("images", images, I, (M,), "x, one image per row", within="the image rows of V")
    _check_size("the tanh values", (M, L, A))
    next_state, alpha = _attend.soft_step(x, stacked, V, keys, images, _weights(params, precision, x.dtype),
                                          _cell_code(pointwise))
    return tuple(next_state), alpha


def soft_attended_greedy_decode(state0, V, keys, W_embed, params, W_vocab, b_vocab, start, end, null, max_length,
                                pointwise, *, precision="fp32"):
    """Greedy decoding with a gated cell and soft attention in one compiled loop: state0 (a tuple of S arrays
    (N, H)), V (N, L, D), keys (N, L, A), W_embed (V, W), ``params`` (without att_Ua: the keys hold it), the output
    layer W_vocab (H, V), b_vocab (V,), word ids as :func:`gated_greedy_decode` takes them -> (captions
    (N, max_length) int32, alphas (N, max_length, L): the weights of the step that chose each word, zeros after the
    caption's ``end``)."""
    _require_built()
    pointwise = _pointwise(pointwise)
    V = _regions(V, None)
    N, L, D = V.shape
    W_embed = _float_array("W_embed", W_embed, 2, ("V", V))
    NV, W = W_embed.shape
    H = _hidden_size(params, ("V", V))
    params, A = _parameters(params, ("V", V), W, H, D, pointwise.gates, SOFT_STEP_PARAMETERS)
    keys = _float_array("keys", keys, 3, ("V", V))
    _expect_shape("keys", keys, (N, L, A), "V and params['att_Wa']")
    s0 = _state(state0, pointwise, N, H, ("V", V), "state0")
    W_vocab = _float_array("W_vocab", W_vocab, 2, ("V", V))
    _expect_shape("W_vocab", W_vocab, (H, NV), "params['Wh'] and W_embed")
    b_vocab = _float_array("b_vocab", b_vocab, 1, ("V", V))
    _expect_shape("b_vocab", b_vocab, (NV,), "W_embed")
    start, null = _word_id("start", start, NV), _word_id("null", null, NV)
    end = -1 if end is None else _word_id("end", end, NV)
    max_length = integer("max_length", max_length, maximum=_MAX_ELEMENTS)
    _check_size("captions", (N, max_length))
    _check_size("the weights", (N, max_length, L))
    _check_size("scores", (N, NV))
    return _attend.soft_greedy(s0, V, keys, W_embed, _weights(params, precision, V.dtype), W_vocab, b_vocab, start,
                               end, null, max_length, _cell_code(pointwise))
