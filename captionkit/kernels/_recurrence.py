"""The gated recurrence engine: the time loops of every gated cell (the built-in RNN's among them), its steps and its
fused greedy decoding, each checked before it reaches ``captionkit._ext._engine``."""
from dataclasses import dataclass

import numpy as np

from captionkit.checks import integer
from captionkit.kernels._bf16 import _bf16_products
from captionkit.kernels._built import _require_built, is_available
from captionkit.kernels._checks import _MAX_ELEMENTS, _check_size, _expect_shape, _float_array, _word_id
from captionkit.pointwise import Pointwise

if is_available():  # else every kernel stops at _require_built()
    from captionkit._ext import _engine

__all__ = ["GatedCache", "capsule_problem", "gated_backward", "gated_forward", "gated_greedy_decode", "gated_step"]


@dataclass(frozen=True)
class GatedCache:
    """What :func:`gated_backward` needs from :func:`gated_forward`: its inputs, every step's state (S, N, T, H), and
    the cell with what its pointwise forward kept: for a compiled one, what it left of each step's rows (A) and the
    recurrent pre-activations (U, None for summed cells); for numpy functions, what they saved (A and U None)."""

    x: np.ndarray
    s0: np.ndarray
    Wx: np.ndarray
    Wh: np.ndarray
    states: np.ndarray
    A: np.ndarray | None
    U: np.ndarray | None
    saved: list | None
    pointwise: Pointwise


def _pointwise(pointwise):
    if not isinstance(pointwise, Pointwise):
        raise TypeError(f"pointwise must be a captionkit.pointwise.Pointwise (a GatedCell's .pointwise), got "
                        f"{type(pointwise).__name__}")
    return pointwise


def _cell_code(pointwise):
    """The engine's view of a cell: its compiled pointwise part when it has one, else its numpy functions."""
    if pointwise.capsules is not None:
        problem = _engine.capsule_problem(pointwise.capsules)
        if problem is not None:
            raise ValueError(f"cell {pointwise.name!r}: {problem}")
    return _engine.CellCode(pointwise.gates, pointwise.states, pointwise.kept, pointwise.summed,
                            pointwise.run_forward, pointwise.run_backward, pointwise.capsules)


def capsule_problem(capsules):
    """None when ``capsules`` is a compiled pointwise part that this captionkit can run (the dict of
    ``pointwise_capsules`` from captionkit/_ext/pointwise.pxd, each capsule named by its signature), else a sentence
    saying what differs. The cell registry refuses a cell for it."""
    _require_built()
    return _engine.capsule_problem(capsules)


def _gated_args(x, h0, Wx, Wh, b, pointwise, x_ndim=3, h0_name="h0"):
    """Check the arguments of a gated call (x (N, T, W) for a sequence, (N, W) for a step); b may be None."""
    pointwise = _pointwise(pointwise)
    x = _float_array("x", x, x_ndim)
    h0 = _float_array(h0_name, h0, 2, ("x", x))
    Wx = _float_array("Wx", Wx, 2, ("x", x))
    Wh = _float_array("Wh", Wh, 2, ("x", x))
    N, W, H = x.shape[0], x.shape[-1], h0.shape[1]
    GH = pointwise.gates * H
    _expect_shape(h0_name, h0, (N, H), "x")
    _expect_shape("Wx", Wx, (W, GH), f"x, {h0_name} and the cell's {pointwise.gates} gates")
    _expect_shape("Wh", Wh, (H, GH), f"{h0_name} and the cell's {pointwise.gates} gates")
    if b is not None:
        b = _float_array("b", b, 1, ("x", x))
        _expect_shape("b", b, (GH,), f"{h0_name} and the cell's {pointwise.gates} gates")
    rows = x.shape[:-1]  # (N, T) for a sequence, (N,) for a step
    _check_size("h", (*rows, H))
    _check_size("the states", (pointwise.states, *rows, H))
    _check_size("the pre-activations", (*rows, pointwise.kept * H))
    return x, h0, Wx, Wh, b, pointwise


def _initial_state(h0, pointwise):
    """(S, N, H): h0, then zeros."""
    s0 = np.zeros((pointwise.states, *h0.shape), dtype=h0.dtype)
    s0[0] = h0
    return s0


def gated_forward(x, h0, Wx, Wh, b, pointwise, *, precision="fp32"):
    """A gated cell over a sequence: x (N, T, W), h0 (N, H), Wx (W, G*H), Wh (H, G*H), b (G*H,), ``pointwise`` the
    cell (a :class:`captionkit.pointwise.Pointwise`) -> h (N, T, H), a :class:`GatedCache`.

    As :func:`captionkit.layers.gated_forward`: the state starts as h0 and zeros, and step t runs the cell's
    pointwise part on x_t Wx + b and h_{t-1} Wh. Its compiled part when it has capsules, else its numpy functions,
    called once per step with the GIL; the products are compiled either way.

    ``precision`` "bf16" (float32 arrays, a CPU with AVX512-BF16) rounds the inputs of every product to bfloat16
    and sums in float32, as :func:`captionkit.layers.gated_forward` with the same argument emulates.
    The pointwise part always sees float32.
    """
    _require_built()
    x, h0, Wx, Wh, b, pointwise = _gated_args(x, h0, Wx, Wh, b, pointwise)
    s0 = _initial_state(h0, pointwise)
    states, A, U, saved = _engine.gated_forward(x, s0, Wx, Wh, b, _cell_code(pointwise),
                                                _bf16_products(precision, x.dtype))
    return states[0], GatedCache(x, s0, Wx, Wh, states, A, U, saved, pointwise)


def gated_backward(dh, cache, *, precision="fp32"):
    """Backward of :func:`gated_forward`: dh (N, T, H), the loss's gradient of every h_t (not counting the
    recurrence) -> dx (N, T, W), dh0 (N, H), dWx (W, G*H), dWh (H, G*H), db (G*H,); ``precision`` as there."""
    _require_built()
    if not isinstance(cache, GatedCache):
        raise TypeError(f"cache must be the GatedCache that gated_forward returned, got {type(cache).__name__}")
    code = _cell_code(cache.pointwise)
    _check_gated_cache(cache, code.compiled)
    dh = _float_array("dh", dh, 3, ("cache x", cache.x))
    _expect_shape("dh", dh, cache.states.shape[1:], "the forward's h")
    return _engine.gated_backward(dh, cache.x, cache.s0, cache.Wx, cache.Wh, cache.states, cache.A, cache.U,
                                  cache.saved, code, _bf16_products(precision, dh.dtype))


def _check_gated_cache(cache, compiled):
    """The cache's arrays are the caller's to keep: check them again in case they changed since the forward."""
    pointwise = cache.pointwise
    x = _float_array("cache x", cache.x, 3)
    s0 = _float_array("cache s0", cache.s0, 3, ("cache x", x))
    (N, T, W), H = x.shape, s0.shape[2]
    GH = pointwise.gates * H
    _expect_shape("cache s0", s0, (pointwise.states, N, H), "cache x and the cell's states")
    _expect_shape("cache Wx", _float_array("cache Wx", cache.Wx, 2, ("cache x", x)), (W, GH), "cache x and s0")
    _expect_shape("cache Wh", _float_array("cache Wh", cache.Wh, 2, ("cache x", x)), (H, GH), "cache s0")
    states = _float_array("cache states", cache.states, 4, ("cache x", x))
    _expect_shape("cache states", states, (pointwise.states, N, T, H), "cache x and s0")
    if not compiled:
        if not isinstance(cache.saved, list) or len(cache.saved) != T:
            raise ValueError(f"cache saved must hold what the cell's numpy forward saved at each of the {T} steps")
        return
    A = _float_array("cache A", cache.A, 3, ("cache x", x))
    _expect_shape("cache A", A, (N, T, pointwise.kept * H), "cache x and s0")
    if pointwise.summed != (cache.U is None):
        raise ValueError("cache U does not fit the cell: it must be None exactly for summed cells")
    if cache.U is not None:
        _expect_shape("cache U", _float_array("cache U", cache.U, 3, ("cache x", x)), (N, T, GH), "cache x and s0")


def gated_step(x, state, Wx, Wh, b, pointwise, *, precision="fp32"):
    """One step of a gated cell: x (N, W), ``state`` a tuple of S arrays (N, H), h first -> the next state tuple;
    ``precision`` as for :func:`gated_forward`."""
    _require_built()
    pointwise = _pointwise(pointwise)
    if not isinstance(state, tuple) or len(state) != pointwise.states:
        raise ValueError(f"state must be a tuple of {pointwise.states} arrays (h first) for cell "
                         f"{pointwise.name!r}, got {type(state).__name__} of {len(state) if isinstance(state, tuple) else '-'}")
    x, h, Wx, Wh, b, pointwise = _gated_args(x, state[0], Wx, Wh, b, pointwise, x_ndim=2, h0_name="state[0]")
    for s, array in enumerate(state[1:], start=1):
        _expect_shape(f"state[{s}]", _float_array(f"state[{s}]", array, 2, ("x", x)), h.shape, "state[0]")
    stacked = np.stack(state) if pointwise.states > 1 else h[None]
    bf16 = _bf16_products(precision, x.dtype)
    return tuple(_engine.gated_step(x, stacked, Wx, Wh, b, _cell_code(pointwise), bf16))


def gated_greedy_decode(h0, W_embed, Wx, Wh, b, W_vocab, b_vocab, start, end, null, max_length, pointwise, *,
                        precision="fp32"):
    """Greedy decoding with a gated cell, every step in one compiled loop -> captions (N, max_length) int32.

    h0 (N, H) initial hidden states (the other state arrays start at zero), W_embed (V, W) word vectors, the cell's
    Wx (W, G*H), Wh (H, G*H), b (G*H,), the output layer W_vocab (H, V), b_vocab (V,); start, end and null are word
    ids (end may be None: no early stop). Step t embeds each caption's last word (``start`` first), takes one
    :func:`gated_step`, and writes the best word of ``h @ W_vocab + b_vocab`` (:func:`affine_argmax`) at position t;
    once a caption has produced ``end`` its row holds ``null`` from then on, and decoding stops when every caption
    has. The numbers of the step-by-step loop of :meth:`captionkit.CaptioningRNN.sample`, with each matrix packed
    once and no Python between steps (for a cell with compiled pointwise part). ``precision`` as for
    :func:`gated_forward` (the matrices rounded once for all the steps).
    """
    _require_built()
    pointwise = _pointwise(pointwise)
    h0 = _float_array("h0", h0, 2)
    W_embed = _float_array("W_embed", W_embed, 2, ("h0", h0))
    N, H = h0.shape
    V, W = W_embed.shape
    _, _, Wx, Wh, b, _ = _gated_args(np.empty((1, W), h0.dtype), h0[:1], Wx, Wh, b, pointwise, x_ndim=2)
    W_vocab = _float_array("W_vocab", W_vocab, 2, ("h0", h0))
    _expect_shape("W_vocab", W_vocab, (H, V), "h0 and W_embed")
    b_vocab = _float_array("b_vocab", b_vocab, 1, ("h0", h0))
    _expect_shape("b_vocab", b_vocab, (V,), "W_embed")
    start, null = _word_id("start", start, V), _word_id("null", null, V)
    end = -1 if end is None else _word_id("end", end, V)
    max_length = integer("max_length", max_length, maximum=_MAX_ELEMENTS)  # the captions' size bounds it
    _check_size("captions", (N, max_length))
    _check_size("scores", (N, V))
    return _engine.gated_greedy(_initial_state(h0, pointwise), W_embed, Wx, Wh, b, W_vocab, b_vocab, start, end,
                                null, max_length, _cell_code(pointwise), _bf16_products(precision, h0.dtype))
