"""The Cell interface: what a recurrent cell gives the captioning model.

A cell owns its parameters (declared by name, shape and initial scale in terms of the word-vector size W and the
hidden size H), a sequence forward/backward used for training, and a single step used for decoding. The model knows
only this interface; docs/cells.md explains it with a worked example.

Shapes: N minibatch, T time steps, W word-vector size, H hidden size.
"""
import abc
from dataclasses import dataclass

import numpy as np

__all__ = ["Cell", "ParamSpec", "shape_problem"]


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
    """

    name = None
    compiled = False

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

    def initial_state(self, h0):
        """Recurrent state at t=0 from the projected image features h0 (N, H); by default just ``(h0,)``."""
        return (h0,)

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
    N, T, W, H = 2, 2, 3, 4
    rng = np.random.RandomState(0)
    sizes = f"W={W}, H={H}, N={N}, T={T}"
    try:
        cell = cell_class(backend="numpy")
        params = cell.init_params(W, H, rng)
        x, h0 = rng.standard_normal((N, T, W)), rng.standard_normal((N, H))
        h, cache = cell.forward(x, h0, params)
        dx, dh0, grads = cell.backward(np.ones_like(h), cache)
        state = cell.step(x[:, 0].copy(), cell.initial_state(h0), params)
    except Exception as exc:  # plugin code may raise anything
        return f"running it on tiny inputs ({sizes}) raised {type(exc).__name__}: {exc}"
    outputs = {"forward's h": (h, (N, T, H)), "backward's dx": (dx, (N, T, W)), "backward's dh0": (dh0, (N, H)),
               "step's h": (state[0] if isinstance(state, tuple) and state else None, (N, H))}
    if not isinstance(grads, dict) or set(grads) != set(params):
        return f"backward returned gradients for {sorted(grads) if isinstance(grads, dict) else grads!r}, " \
               f"expected one for each declared parameter {sorted(params)}"
    outputs.update({f"backward's grads[{k!r}]": (grads[k], v.shape) for k, v in params.items()})
    for what, (value, shape) in outputs.items():
        if getattr(value, "shape", None) != shape:
            return f"{what} has shape {getattr(value, 'shape', type(value).__name__)}, expected {shape} ({sizes})"
    return None
