"""The Cell interface: what a recurrent cell gives the captioning model.

A cell owns its parameters (declared by name, shape and initial scale in terms of the word-vector size W and the
hidden size H), a sequence forward/backward used for training, and a single step used for decoding. The model knows
only this interface; docs/cells.md explains it with a worked example.

The model calls a cell through its ``run_*`` methods and :meth:`Cell.parameters_for`, which see the model's sizes
(:class:`CellSizes`) and the conditioning's per-step context, and adapt them to the cell's own methods: a cell
written against the plain interface (``parameters(W, H)``, ``forward(x, h0, params)``, ...) keeps working as it is,
and a cell that reads the context opts in with ``reads_context = True``.

Shapes: N minibatch, T time steps, W word-vector size, H hidden size, D image-feature size.
"""
import abc
from dataclasses import dataclass

import numpy as np

__all__ = ["Cell", "CellSizes", "ParamSpec", "shape_problem"]


@dataclass(frozen=True)
class CellSizes:
    """The model's sizes that a cell sees: word vectors W (``wordvec_dim``), hidden state H (``hidden_dim``), image
    features D (``input_dim``), and the width of the conditioning's per-step context rows (``context_dim``, None
    when the model has no context)."""

    wordvec_dim: int
    hidden_dim: int
    input_dim: int
    context_dim: int | None = None


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a cell: its shape, and the fan-in that scales its initial values.

    Initial values are ``randn(*shape) / sqrt(fan_in)``, or zeros when ``fan_in`` is None (biases).
    """

    shape: tuple
    fan_in: int | None = None

    def initial_value(self, rng):
        """A float64 array drawn from ``rng`` (``np.random`` or a ``RandomState``), or zeros."""
        if self.fan_in is None:
            return np.zeros(self.shape)
        return rng.standard_normal(self.shape) / np.sqrt(self.fan_in)


class Cell(abc.ABC):
    """Base class of recurrent cells.

    Subclasses set ``name`` and implement :meth:`parameters`, :meth:`forward`, :meth:`backward` and :meth:`step`;
    cells with more recurrent state than ``h`` also override :meth:`initial_state`. A cell with a compiled path of
    its own sets ``compiled = True`` and looks at ``self.backend`` (``"numpy"`` or ``"cython"``). A cell of the
    usual gated form subclasses :class:`captionkit.cells.GatedCell` instead and writes only its elementwise part.

    The recurrent state is a tuple of arrays with N rows whose first element is the hidden state h (N, H): decoders
    select and reorder its rows (beam search) without knowing what the other elements mean.

    A cell that reads the conditioning's per-step context (one row per image) sets ``reads_context = True``; its
    :meth:`forward` then takes ``context`` (one row per sequence) as a further argument, :meth:`step` takes
    ``context, images`` (the context of every image and, for each stepped row, the row of its image, so that beam
    search's hypotheses share their image's context rather than copy it), and :meth:`backward` returns the
    context's gradient fourth. Other cells never see a context, and a model with one refuses them.
    """

    name = None
    compiled = False
    reads_context = False

    def __init__(self, backend="numpy"):
        if backend not in ("numpy", "cython"):
            raise ValueError(f"backend must be 'numpy' or 'cython', got {backend!r}")
        self.backend = backend if self.compiled else "numpy"

    @abc.abstractmethod
    def parameters(self, wordvec_dim, hidden_dim):
        """Ordered dict ``{name: ParamSpec}`` of this cell's parameters for word vectors of size W and hidden size H.

        Initial values are drawn in this order, so it is part of reproducibility.
        """

    def init_params(self, wordvec_dim, hidden_dim, rng=np.random):
        """Fresh float64 parameters ``{name: array}`` drawn from ``rng`` as :meth:`parameters` declares."""
        return {name: spec.initial_value(rng) for name, spec in self.parameters(wordvec_dim, hidden_dim).items()}

    # ------------------------------------------------------------------ what the model calls
    def parameters_for(self, sizes):
        """The parameters of this cell in a model of :class:`CellSizes` ``sizes``; by default :meth:`parameters` of
        its W and H. A cell whose parameters depend on the feature or context size overrides this."""
        return self.parameters(sizes.wordvec_dim, sizes.hidden_dim)

    def init_params_for(self, sizes, rng=np.random):
        """Fresh float64 parameters for ``sizes``, drawn from ``rng`` in :meth:`parameters_for`'s order."""
        return {name: spec.initial_value(rng) for name, spec in self.parameters_for(sizes).items()}

    def step_blocks(self, sizes):
        """H-wide arrays per row and time step that the cell holds for one training step (forward and backward
        caches count once each; the model multiplies): the memory estimate of ``CaptioningRNN.training_step_bytes``.
        The default is 1 + the gate count that a cell of the usual form (Wx (W, G*H), Wh (H, G*H), b (G*H,)) with
        as many parameter elements would have, at least 1; a cell that knows better overrides it."""
        W, H = sizes.wordvec_dim, sizes.hidden_dim
        elements = sum(int(np.prod(spec.shape, dtype=object)) for spec in self.parameters_for(sizes).values())
        return 1 + max(1, round(elements / (H * (W + H + 1))))

    def _refuse_context(self, context):
        if context is not None and not self.reads_context:
            raise ValueError(f"cell {self.name!r} does not read a per-step context (reads_context is False), but "
                             "the model's conditioning gives one")

    def run_forward(self, x, h0, params, context=None):
        """:meth:`forward` with the conditioning's context (None: none) -> h (N, T, H), cache."""
        self._refuse_context(context)
        return self.forward(x, h0, params, context) if self.reads_context else self.forward(x, h0, params)

    def run_backward(self, dh, cache):
        """:meth:`backward` -> dx (N, T, W), dh0 (N, H), the context's gradient (None for a cell without one),
        grads."""
        if self.reads_context:
            dx, dh0, grads, dcontext = self.backward(dh, cache)
            return dx, dh0, dcontext, grads
        dx, dh0, grads = self.backward(dh, cache)
        return dx, dh0, None, grads

    def run_step(self, x, state, params, context=None, images=None):
        """:meth:`step` with the context of every image (None: none) and ``images`` (M,), the image of each of the
        M stepped rows -> the next state tuple."""
        self._refuse_context(context)
        return self.step(x, state, params, context, images) if self.reads_context else self.step(x, state, params)

    def use_precision(self, precision):
        """Run this cell's matrix products at ``precision`` (:data:`captionkit.precision.PRECISIONS`); the model
        calls it once, after building the cell. A cell that computes its own products (any cell but a
        :class:`captionkit.cells.GatedCell`, whose products are the engine's) runs at "fp32" only: ValueError
        naming it for any other precision."""
        if precision != "fp32":
            raise ValueError(f"cell {self.name!r} computes its own matrix products (it is not a GatedCell, whose "
                             f"products captionkit's engine runs), so it cannot run at precision={precision!r}; use "
                             "precision 'fp32', or a GatedCell such as rnn, lstm or gru")

    def initial_state(self, h0):
        """Recurrent state at t=0 from the projected image features h0 (N, H); by default just ``(h0,)``."""
        return (h0,)

    def decoding_inputs(self, h0, context, params):
        """What decoding's steps start from: (the state before the first word, the context :meth:`run_step`
        reads). By default :meth:`initial_state` and the conditioning's context as it is; a cell that prepares its
        context once per caption (an attention's projected regions) or starts further state from it overrides
        this."""
        return self.initial_state(h0), context

    @abc.abstractmethod
    def forward(self, x, h0, params):
        """Run the cell over a sequence: x (N, T, W), h0 (N, H) -> h (N, T, H), cache for :meth:`backward`."""

    @abc.abstractmethod
    def backward(self, dh, cache):
        """Backward of :meth:`forward`: dh (N, T, H) -> dx (N, T, W), dh0 (N, H), grads ``{name: array}``."""

    @abc.abstractmethod
    def step(self, x, state, params):
        """One decoding step: x (N, W) and the state tuple -> the next state tuple (its first element is h)."""

    def greedy_decode(self, h0, params, W_embed, W_vocab, b_vocab, start, end, null, max_length):
        """Optional: greedy decoding in one call, for a cell that can do it faster than the model's step loop.

        h0 (N, H) projected image features; W_embed (V, W), W_vocab (H, V), b_vocab (V,) the model's word vectors
        and output layer; start, end (None: no early stop) and null word ids -> captions (N, max_length) int32 with
        the numbers of :meth:`captionkit.CaptioningRNN.sample`'s greedy loop over :meth:`step`. The default returns
        None, and the model runs that loop.
        """
        return None

    def check_inputs(self, x, h0, params):
        """Raise ValueError naming the argument when x, h0 or params do not fit one another."""
        if x.ndim != 3:
            raise ValueError(f"{self.name}: x must be (N, T, W), got shape {x.shape}")
        if h0.ndim != 2 or h0.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name}: h0 must be (N, H) with N={x.shape[0]} from x, got shape {h0.shape}")
        expected = self.parameters(x.shape[2], h0.shape[1])
        for name, spec in expected.items():
            if name not in params:
                raise ValueError(f"{self.name}: missing parameter {name!r}")
            if params[name].shape != tuple(spec.shape):
                raise ValueError(
                    f"{self.name}: parameter {name!r} has shape {params[name].shape}, expected {tuple(spec.shape)} "
                    f"for W={x.shape[2]}, H={h0.shape[1]}"
                )


def shape_problem(cell_class):
    """Run ``cell_class`` once on tiny float64 inputs (numpy backend) and say what does not fit its declaration.

    Returns None when forward, backward and step produce the shapes that ``parameters`` implies, else a message.
    The registry calls this when it first loads a plugin, so that a cell whose declared parameters, backward or step
    do not fit together is refused with its distribution named, before a model trains with it.
    """
    N, T, W, H, D, C = 2, 2, 3, 4, 5, 3
    rng = np.random.RandomState(0)
    reads_context = getattr(cell_class, "reads_context", False)
    sizes = f"W={W}, H={H}, N={N}, T={T}" + (f", context (N, {C})" if reads_context else "")
    try:
        cell = cell_class(backend="numpy")
        params = cell.init_params_for(CellSizes(W, H, D, C if reads_context else None), rng)
        x, h0 = rng.standard_normal((N, T, W)), rng.standard_normal((N, H))
        context = rng.standard_normal((N, C)) if reads_context else None
        h, cache = cell.run_forward(x, h0, params, context)
        dx, dh0, dcontext, grads = cell.run_backward(np.ones_like(h), cache)
        state = cell.run_step(x[:, 0].copy(), cell.initial_state(h0), params, context, np.arange(N))
    except Exception as exc:  # plugin code may raise anything
        return f"running it on tiny inputs ({sizes}) raised {type(exc).__name__}: {exc}"
    outputs = {"forward's h": (h, (N, T, H)), "backward's dx": (dx, (N, T, W)), "backward's dh0": (dh0, (N, H)),
               "step's h": (state[0] if isinstance(state, tuple) and state else None, (N, H))}
    if reads_context:
        outputs["backward's dcontext"] = (dcontext, (N, C))
    if not isinstance(grads, dict) or set(grads) != set(params):
        return f"backward returned gradients for {sorted(grads) if isinstance(grads, dict) else grads!r}, " \
               f"expected one for each declared parameter {sorted(params)}"
    outputs.update({f"backward's grads[{k!r}]": (grads[k], v.shape) for k, v in params.items()})
    for what, (value, shape) in outputs.items():
        if getattr(value, "shape", None) != shape:
            return f"{what} has shape {getattr(value, 'shape', type(value).__name__)}, expected {shape} ({sizes})"
    return None
