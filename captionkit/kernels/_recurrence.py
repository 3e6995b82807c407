"""Compiled kernels for recurrent captioning models: the public, checked entry points to ``captionkit._ext``.

Each function takes numpy arrays and follows the conventions of the :mod:`captionkit.layers` function it
accelerates (same argument order, shapes and return values), so the numpy reference can stand in for it and tests
compare the two. The gated recurrence engine (``gated_*``: the time loops of every gated cell, the built-in RNN's
among them), the output layer and the decoding steps run in C with the GIL released; every matrix product goes
through one BLAS, named by :func:`blas` (OpenBLAS from the scipy-openblas32 wheel, else scipy's), on one thread:
:mod:`captionkit.parallel` runs shards of a batch side by side instead.

Conventions shared by every function:

- Floating arrays are float32 or float64, all of one dtype per call (a mix raises TypeError), and C-contiguous
  (``np.ascontiguousarray`` makes them so); no dimension may be 0.
- Arrays a kernel only reads may be read-only. Arrays it writes into (only the Adam updates have any) must be
  writeable.
- Word ids may have any integer dtype and layout; every id must lie in ``[0, V)``.
- A bad call raises TypeError (wrong type or dtype) or ValueError (shape, size, layout or value), naming the
  argument; nothing reaches the compiled code unchecked.
- Every array must have fewer than 2**31 elements (BLAS counts in 32-bit integers).

Shapes use N minibatch, T time steps, D input size, H hidden size, V vocabulary size, M output size.

Example::

    import numpy as np
    from captionkit import kernels

    rng = np.random.default_rng(0)
    x, h0 = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3))
    Wx, Wh, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 3)), np.zeros(3)
    h, cache = kernels.rnn_forward(x, h0, Wx, Wh, b)            # h: (2, 5, 3) float64
    dx, dh0, dWx, dWh, db = kernels.rnn_backward(np.ones_like(h), cache)

Any gated cell runs the same way with its ``pointwise`` (``cell.pointwise`` of a GatedCell)::

    h, cache = kernels.gated_forward(x, h0, Wx4, Wh4, b4, get_cell("lstm")(backend="cython").pointwise)
"""
import math
import operator
from dataclasses import dataclass

import numpy as np

from captionkit import parallel
from captionkit.pointwise import Pointwise

try:
    from captionkit._ext import _affine, _blas, _decode, _embedding, _engine, _optim, _rnn, _softmax, pointwise
except ImportError as exc:  # not built: the numpy reference still works
    _IMPORT_ERROR = exc
else:
    _IMPORT_ERROR = None

__all__ = [
    "GatedCache",
    "adam_update",
    "adam_update_many",
    "affine_argmax",
    "affine_backward",
    "affine_forward",
    "affine_log_softmax_topk",
    "blas",
    "blas_threads",
    "capsule_problem",
    "gated_backward",
    "gated_forward",
    "gated_greedy_decode",
    "gated_step",
    "is_available",
    "rnn_backward",
    "rnn_forward",
    "rnn_step_forward",
    "sigmoid",
    "tanh",
    "temporal_softmax_affine_loss",
    "temporal_softmax_affine_nll",
    "word_embedding_backward",
    "word_embedding_forward",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_ELEMENTS = 2**31 - 1
_ADAM_SLICE = 1 << 16  # elements below which a thread would cost more than it saves


def is_available():
    """True when the compiled extension modules are built and import."""
    return _IMPORT_ERROR is None


def blas():
    """Which BLAS the kernels' matrix products use (a description, for reports)."""
    _require_built()
    return _blas.description()


def blas_threads():
    """How many threads the kernels' OpenBLAS was configured with (before captionkit set it to one per call): the
    default number of shards of :mod:`captionkit.parallel`; None for a BLAS whose threads captionkit does not
    control."""
    _require_built()
    from captionkit import _ext

    return _ext.configured_blas_threads


def _require_built():
    if _IMPORT_ERROR is not None:
        raise RuntimeError(
            "captionkit's compiled kernels are not built in this installation "
            f"({_IMPORT_ERROR}); reinstall with `pip install .` (needs a C compiler)"
        )


# ---------------------------------------------------------------------- argument checks


def _check_size(name, shape):
    if math.prod(shape) > _MAX_ELEMENTS:
        raise ValueError(f"{name} would have shape {tuple(shape)}, {math.prod(shape)} elements: more than 2**31 - 1")


def _float_array(name, a, ndim, like=None, writeable=False):
    """Check a floating argument; ``like`` is ``(name, array)`` of an argument whose dtype it must share."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if like is not None and a.dtype != like[1].dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but {like[0]} has {like[1].dtype}; one call takes one dtype")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} has an empty dimension: shape {a.shape}")
    _check_size(name, a.shape)
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray); got strides {a.strides}")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} is read-only, but this call updates it in place")
    return a


def _expect_shape(name, a, shape, source):
    """``a`` must have ``shape``, which the arguments named in ``source`` determine."""
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (from {source}), got {a.shape}")


def _ids(name, a, vocab_size, shape, source):
    """Word ids in [0, vocab_size) of any integer dtype and layout -> a contiguous int64 copy, flattened.

    ``shape`` is the expected shape (None in it: any non-zero size), determined by the arguments in ``source``.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of integer ids, got {type(a).__name__}")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, got dtype {a.dtype}")
    if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
        expected = tuple("any" if want is None else want for want in shape)
        raise ValueError(f"{name} must have shape {expected} (from {source}), got {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} has an empty dimension: shape {a.shape}")
    _check_size(name, a.shape)
    bad = (a < 0) | (a >= vocab_size)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}{list(where)} = {a[where]} is outside the vocabulary [0, {vocab_size})")
    return np.ascontiguousarray(a, dtype=np.int64).reshape(-1)


def _mask(name, a, shape, source):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy bool array, got {type(a).__name__}")
    if a.dtype != np.bool_:
        raise TypeError(f"{name} must have dtype bool, got {a.dtype}")
    _expect_shape(name, a, shape, source)
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _positive_int(name, value, upper=None):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < 1 or (upper is not None and value > upper):
        bound = f"[1, {upper}]" if upper is not None else ">= 1"
        raise ValueError(f"{name} must be in {bound}, got {value}")
    return value


def _real(name, value, low, high=None):
    """A finite float in [low, high) (or [low, inf))."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < low or (high is not None and value >= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high if high is not None else 'inf'}), "
                         f"got {value}")
    return value


def _unpack(cache, length, producer):
    if not isinstance(cache, tuple) or len(cache) != length:
        raise TypeError(f"cache must be the tuple that {producer} returned")
    return cache


# ---------------------------------------------------------------------- affine


def _affine_args(x, w, b, x_name):
    """Check x (N, D), w (D, M), b (M,): 2-D, 2-D and 1-D arrays of one dtype with matching sizes."""
    x = _float_array(x_name, x, 2)
    w = _float_array("w", w, 2, (x_name, x))
    b = _float_array("b", b, 1, (x_name, x))
    _expect_shape("w", w, (x.shape[1], w.shape[1]), x_name)
    _expect_shape("b", b, (w.shape[1],), "w")
    return x, w, b


def affine_forward(x, w, b):
    """Affine layer: x (N, D), w (D, M), b (M,) -> out (N, M) = x @ w + b, cache.

    As :func:`captionkit.layers.affine_forward` for a 2-D x.
    """
    _require_built()
    x, w, b = _affine_args(x, w, b, "x")
    _check_size("out", (x.shape[0], w.shape[1]))
    return _affine.affine_forward(x, w, b), (x, w, b)


def affine_backward(dout, cache, input_grad=True):
    """Backward of :func:`affine_forward`: dout (N, M) -> dx (N, D), dw (D, M), db (M,).

    With ``input_grad=False`` dx is not computed and None stands in its place (for inputs that are data).
    """
    _require_built()
    x, w, _ = _unpack(cache, 3, "affine_forward")
    x = _float_array("cache x", x, 2)
    w = _float_array("cache w", w, 2, ("cache x", x))
    _expect_shape("cache w", w, (x.shape[1], w.shape[1]), "cache x")
    dout = _float_array("dout", dout, 2, ("cache x", x))
    _expect_shape("dout", dout, (x.shape[0], w.shape[1]), "cache x and cache w")
    return _affine.affine_backward(dout, x, w, bool(input_grad))


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


# ---------------------------------------------------------------------- the gated recurrence engine


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


def gated_forward(x, h0, Wx, Wh, b, pointwise):
    """A gated cell over a sequence: x (N, T, W), h0 (N, H), Wx (W, G*H), Wh (H, G*H), b (G*H,), ``pointwise`` the
    cell (a :class:`captionkit.pointwise.Pointwise`) -> h (N, T, H), a :class:`GatedCache`.

    As :func:`captionkit.layers.gated_forward`: the state starts as h0 and zeros, and step t runs the cell's
    pointwise part on x_t Wx + b and h_{t-1} Wh. Its compiled part when it has capsules, else its numpy functions,
    called once per step with the GIL; the products are compiled either way.
    """
    _require_built()
    x, h0, Wx, Wh, b, pointwise = _gated_args(x, h0, Wx, Wh, b, pointwise)
    s0 = _initial_state(h0, pointwise)
    states, A, U, saved = _engine.gated_forward(x, s0, Wx, Wh, b, _cell_code(pointwise))
    return states[0], GatedCache(x, s0, Wx, Wh, states, A, U, saved, pointwise)


def gated_backward(dh, cache):
    """Backward of :func:`gated_forward`: dh (N, T, H), the loss's gradient of every h_t (not counting the
    recurrence) -> dx (N, T, W), dh0 (N, H), dWx (W, G*H), dWh (H, G*H), db (G*H,)."""
    _require_built()
    if not isinstance(cache, GatedCache):
        raise TypeError(f"cache must be the GatedCache that gated_forward returned, got {type(cache).__name__}")
    code = _cell_code(cache.pointwise)
    _check_gated_cache(cache, code.compiled)
    dh = _float_array("dh", dh, 3, ("cache x", cache.x))
    _expect_shape("dh", dh, cache.states.shape[1:], "the forward's h")
    return _engine.gated_backward(dh, cache.x, cache.s0, cache.Wx, cache.Wh, cache.states, cache.A, cache.U,
                                  cache.saved, code)


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


def gated_step(x, state, Wx, Wh, b, pointwise):
    """One step of a gated cell: x (N, W), ``state`` a tuple of S arrays (N, H), h first -> the next state tuple."""
    _require_built()
    pointwise = _pointwise(pointwise)
    if not isinstance(state, tuple) or len(state) != pointwise.states:
        raise ValueError(f"state must be a tuple of {pointwise.states} arrays (h first) for cell "
                         f"{pointwise.name!r}, got {type(state).__name__} of {len(state) if isinstance(state, tuple) else '-'}")
    x, h, Wx, Wh, b, pointwise = _gated_args(x, state[0], Wx, Wh, b, pointwise, x_ndim=2, h0_name="state[0]")
    for s, array in enumerate(state[1:], start=1):
        _expect_shape(f"state[{s}]", _float_array(f"state[{s}]", array, 2, ("x", x)), h.shape, "state[0]")
    stacked = np.stack(state) if pointwise.states > 1 else h[None]
    return tuple(_engine.gated_step(x, stacked, Wx, Wh, b, _cell_code(pointwise)))


def gated_greedy_decode(h0, W_embed, Wx, Wh, b, W_vocab, b_vocab, start, end, null, max_length, pointwise):
    """Greedy decoding with a gated cell, every step in one compiled loop -> captions (N, max_length) int32.

    h0 (N, H) initial hidden states (the other state arrays start at zero), W_embed (V, W) word vectors, the cell's
    Wx (W, G*H), Wh (H, G*H), b (G*H,), the output layer W_vocab (H, V), b_vocab (V,); start, end and null are word
    ids (end may be None: no early stop). Step t embeds each caption's last word (``start`` first), takes one
    :func:`gated_step`, and writes the best word of ``h @ W_vocab + b_vocab`` (:func:`affine_argmax`) at position t;
    once a caption has produced ``end`` its row holds ``null`` from then on, and decoding stops when every caption
    has. The numbers of the step-by-step loop of :meth:`captionkit.CaptioningRNN.sample`, with each matrix packed
    once and no Python between steps (for a cell with compiled pointwise part).
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
    max_length = _positive_int("max_length", max_length)
    _check_size("captions", (N, max_length))
    _check_size("scores", (N, V))
    return _engine.gated_greedy(_initial_state(h0, pointwise), W_embed, Wx, Wh, b, W_vocab, b_vocab, start, end,
                                null, max_length, _cell_code(pointwise))


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


# ---------------------------------------------------------------------- output layer


def temporal_softmax_affine_loss(h, w, b, y, mask, batch=None):
    """The output layer of a captioning model, forward and backward in one call.

    h (N, T, H) hidden states, w (H, V), b (V,), y (N, T) integer targets in [0, V), mask (N, T) bool ->
    ``(loss, dh (N, T, H), dw (H, V), db (V,))``: the numbers of :func:`captionkit.layers.temporal_affine_forward`
    then :func:`captionkit.layers.temporal_softmax_loss` (the loss sums the unmasked positions and divides by N)
    then :func:`captionkit.layers.temporal_affine_backward`, computed for the unmasked positions only and without
    a second (N, T, V) array for the gradient of the scores. ``batch`` (default N) replaces N as the divisor, for
    h that is a shard of a larger batch: the shards' losses and gradients then add up to the whole batch's.
    """
    _require_built()
    h, w, b, targets, flat_mask = _output_layer_args(h, w, b, y, mask)
    N, T, H = h.shape
    batch = N if batch is None else _positive_int("batch", batch)
    loss, dh, dw, db = _softmax.affine_softmax_loss(h.reshape(N * T, H), w, b, targets, flat_mask, batch)
    return loss, dh.reshape(N, T, H), dw, db


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


def temporal_softmax_affine_nll(h, w, b, y, mask):
    """Negative log-likelihood of each caption under the output layer: h (N, T, H), w (H, V), b (V,), y (N, T)
    integer targets in [0, V), mask (N, T) bool -> (N,) float64, the sum over t with mask of
    ``-log softmax(h[n, t] @ w + b)[y[n, t]]``. :func:`temporal_softmax_affine_loss`'s forward alone, per caption."""
    _require_built()
    h, w, b, targets, flat_mask = _output_layer_args(h, w, b, y, mask)
    N, T, H = h.shape
    return _softmax.affine_nll(h.reshape(N * T, H), w, b, targets, flat_mask, T)


# ---------------------------------------------------------------------- decoding


def _decode_args(h, w, b):
    h, w, b = _affine_args(h, w, b, "h")
    _check_size("scores", (h.shape[0], w.shape[1]))
    return h, w, b


def affine_argmax(h, w, b):
    """Greedy choice of the next word: h (N, H), w (H, V), b (V,) -> (N,) int64 ids of the best score h @ w + b.

    The same as ``(h @ w + b).argmax(axis=1)`` (the first index on ties, the first NaN if any) without returning
    the (N, V) scores.
    """
    _require_built()
    return _decode.affine_argmax(*_decode_args(h, w, b))


def affine_log_softmax_topk(h, w, b, k):
    """Beam-search expansion: h (N, H), w (H, V), b (V,), k in [1, V] -> (logp (N, k), ids (N, k) int64).

    Row n holds the k largest log-probabilities of ``log_softmax(h[n] @ w + b)`` in descending order and their word
    ids (ties: the lower id first; NaN ranks last), i.e. the first k columns of a stable argsort of their negation.
    """
    _require_built()
    h, w, b = _decode_args(h, w, b)
    k = _positive_int("k", k, w.shape[1])
    return _decode.affine_log_softmax_topk(h, w, b, k)


def _word_id(name, value, vocab_size):
    """An integer word id in [0, vocab_size)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer word id, got {value!r}")
    if not 0 <= value < vocab_size:
        raise ValueError(f"{name} must be a word id in [0, {vocab_size}) (from W_embed), got {value}")
    return int(value)


# ---------------------------------------------------------------------- optimiser


def adam_update(w, dw, m, v, t, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """One Adam step in place with the arithmetic of :func:`captionkit.optim.adam`; returns None.

    w, dw, m, v: arrays of one shape and dtype, C-contiguous, not overlapping (w, m and v writeable); m and v are
    the moment estimates (zeros before the first step); t is the number of this update, counting from 1. One pass
    over memory instead of the reference's dozen array temporaries, in slices on captionkit.parallel's threads
    when the arrays are large. For all of a model's parameters at once, :func:`adam_update_many` is faster.
    """
    _require_built()
    groups = [_adam_arrays(w, dw, m, v, ("w", "dw", "m", "v"))]
    _adam_in_slices(groups, *_adam_hyperparameters(t, learning_rate, beta1, beta2, epsilon))


def adam_update_many(ws, dws, ms, vs, t, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """:func:`adam_update` on many arrays in one call: ``ws[i], dws[i], ms[i], vs[i]`` are the w, dw, m, v there,
    for every i, with one t and one set of hyperparameters; returns None.

    ws, dws, ms, vs: sequences of one length; the arrays of one i share a shape, all arrays share a dtype, and no
    array may overlap another. The same arithmetic as one :func:`adam_update` per i, but the threads are dispatched
    once and share out the elements of all the arrays together (docs/benchmarks.md measures the difference).
    """
    _require_built()
    lists = {"ws": ws, "dws": dws, "ms": ms, "vs": vs}
    for name, value in lists.items():
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple of arrays, got {type(value).__name__}")
    if len({len(value) for value in lists.values()}) != 1:
        raise ValueError("ws, dws, ms and vs must have one length, got "
                         + ", ".join(f"{len(value)} ({name})" for name, value in lists.items()))
    if not ws:
        raise ValueError("ws is empty: no arrays to update")
    groups = []
    for i, arrays in enumerate(zip(ws, dws, ms, vs)):
        names = tuple(f"{name}[{i}]" for name in lists)
        groups.append(_adam_arrays(*arrays, names, like=groups[0] if groups else None))
    _adam_in_slices(groups, *_adam_hyperparameters(t, learning_rate, beta1, beta2, epsilon))


def _adam_arrays(w, dw, m, v, names, like=None):
    """Checked, flattened (name, array) pairs of one Adam update; ``like``: a group whose dtype it must share."""
    w = _float_array(names[0], w, w.ndim if isinstance(w, np.ndarray) else 1, like and like[0], writeable=True)
    group = [(names[0], w)]
    for name, a, writeable in zip(names[1:], (dw, m, v), (False, True, True)):
        a = _float_array(name, a, w.ndim, group[0], writeable)
        _expect_shape(name, a, w.shape, names[0])
        group.append((name, a))
    return [(name, a.reshape(-1)) for name, a in group]


def _adam_hyperparameters(t, learning_rate, beta1, beta2, epsilon):
    """Checked (learning_rate, beta1, beta2, epsilon, c1, c2) with the bias corrections c1, c2 of step t."""
    t = _positive_int("t", t)
    learning_rate = _real("learning_rate", learning_rate, 0.0)
    beta1 = _real("beta1", beta1, 0.0, 1.0)
    beta2 = _real("beta2", beta2, 0.0, 1.0)
    epsilon = _real("epsilon", epsilon, 0.0)
    c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
    if c1 == 0.0 or c2 == 0.0:
        raise ValueError(f"beta1={beta1}, beta2={beta2} give a zero bias correction at t={t}")
    return learning_rate, beta1, beta2, epsilon, c1, c2


def _adam_in_slices(groups, *hyperparameters):
    """Adam on every group (w, dw, m, v), the elements of all groups cut into one run of slices per thread."""
    # Position 1 of a group is dw, the one array Adam only reads.
    _refuse_overlaps([(name, a, position != 1) for group in groups for position, (name, a) in enumerate(group)])
    sizes = [group[0][1].size for group in groups]
    offsets = np.cumsum([0] + sizes)

    def update(part):
        # part: a range of the groups' elements laid end to end; each group it touches gets one compiled call.
        for g, group in enumerate(groups):
            lo, hi = max(part.start, offsets[g]), min(part.stop, offsets[g + 1])
            if lo < hi:
                piece = slice(lo - offsets[g], hi - offsets[g])
                _optim.adam_update(*[a[piece] for _, a in group], *hyperparameters)

    # Memory-bound, so large arrays go faster in slices on all of captionkit.parallel's threads.
    parallel.run([lambda part=part: update(part) for part in parallel.shards(int(offsets[-1]), min_rows=_ADAM_SLICE)])


def _refuse_overlaps(arrays):
    """ValueError naming two of ``arrays`` (name, array, written) that share memory where one of them is written.
    Every array is C-contiguous, so its bytes are one interval."""
    spans = sorted((a.__array_interface__["data"][0], a.nbytes, written, name) for name, a, written in arrays)
    reach, reach_name, reach_written = -1, None, False  # the interval seen so far that ends furthest to the right
    for start, nbytes, written, name in spans:
        if start < reach and (written or reach_written):
            raise ValueError(f"{reach_name} and {name} overlap in memory; Adam needs separate arrays")
        if start + nbytes > reach:
            reach, reach_name, reach_written = start + nbytes, name, written
