"""Conditioning: how the image reaches the decoder.

A conditioning part owns the parameters that turn image features into what the recurrent cell starts from and
reads: the initial hidden state h0 (N, H), and a per-step context (None when the image enters only through h0).
The model calls its forward once per batch, before the cell runs, and its backward once after the cell's, with the
gradients of h0 and of the context. Today's model uses :class:`ImageProjection` (h0 = features W_proj + b_proj, no
context); a model that attends over a grid of image regions plugs in another part here that returns that grid as
its context (docs/architecture.md, "Where attention plugs in").

Shapes: N images, D feature size, H hidden size.
"""
import abc

from captionkit.cells.base import ParamSpec

__all__ = ["Conditioning", "GridProjection", "ImageProjection"]


class Conditioning(abc.ABC):
    """Base class of conditioning parts. ``ops`` is the backend's layer functions (``runtime(backend).ops``);
    ``context_dim`` is the width of the per-step context's rows, None when :meth:`forward` gives no context. Without
    ``ops`` only the declaration (:meth:`parameters`) is usable, which is all a spec needs for its shapes."""

    context_dim = None
    context_grad = False  # whether backward needs the context's gradient (not when the context is the features)

    def __init__(self, input_dim, hidden_dim, ops=None):
        self.input_dim, self.hidden_dim, self.ops = int(input_dim), int(hidden_dim), ops

    @abc.abstractmethod
    def parameters(self):
        """Ordered dict ``{name: ParamSpec}``; initial values are drawn in this order."""

    def init_params(self, rng):
        """Fresh float64 parameters ``{name: array}`` drawn from ``rng`` as :meth:`parameters` declares."""
        return {name: spec.initial_value(rng) for name, spec in self.parameters().items()}

    @abc.abstractmethod
    def forward(self, features, params):
        """features (N, D) -> (h0 (N, H), context or None, cache for :meth:`backward`)."""

    def decoding_inputs(self, features, params):
        """features (N, D) -> (h0 (N, H), context or None): :meth:`forward` without the cache, for decoding."""
        h0, context, _ = self.forward(features, params)
        return h0, context

    @abc.abstractmethod
    def backward(self, dh0, dcontext, cache):
        """Backward of :meth:`forward`: dh0 (N, H) and the context's gradient (None when it has none, or when
        ``context_grad`` is False: the model then does not compute it) -> ``{name: gradient}`` for each of
        :meth:`parameters`. Features are data, so no gradient reaches them."""


class ImageProjection(Conditioning):
    """h0 = features (N, D) @ W_proj (D, H) + b_proj (H,), and no per-step context: the "Show and Tell" form.

    W_proj starts as ``randn(D, H) / sqrt(D)`` and b_proj as zeros, the assignment's initialisation.
    """

    def parameters(self):
        D, H = self.input_dim, self.hidden_dim
        return {"W_proj": ParamSpec((D, H), fan_in=D), "b_proj": ParamSpec((H,))}

    def forward(self, features, params):
        h0, cache = self.ops.affine_forward(features, params["W_proj"], params["b_proj"])
        return h0, None, cache

    def backward(self, dh0, dcontext, cache):
        if dcontext is not None:
            raise ValueError("ImageProjection has no context, so its backward takes dcontext=None")
        _, dW_proj, db_proj = self.ops.affine_backward(dh0, cache, input_grad=False)
        return {"W_proj": dW_proj, "b_proj": db_proj}


class GridProjection(ImageProjection):
    """A grid of L regions per image, features (N, L, D): h0 = mean over L of the regions, projected as
    :class:`ImageProjection` projects a pooled vector (the same W_proj, b_proj), and, when ``attends``, the grid
    itself as the per-step context (``context_dim`` D) for a cell that attends over it. Without ``attends`` this is
    a pooled model that takes grid features. The context is the features, data, so its gradient is never needed
    (``context_grad`` False)."""

    def __init__(self, input_dim, hidden_dim, ops=None, attends=False):
        super().__init__(input_dim, hidden_dim, ops)
        self.attends = bool(attends)
        self.context_dim = self.input_dim if self.attends else None

    def forward(self, features, params):
        h0, cache = self.ops.affine_forward(features.mean(axis=1), params["W_proj"], params["b_proj"])
        return h0, (features if self.attends else None), cache

    def backward(self, dh0, dcontext, cache):
        if dcontext is not None and not self.attends:
            raise ValueError("GridProjection gives no context unless it attends, so its backward takes dcontext=None")
        _, dW_proj, db_proj = self.ops.affine_backward(dh0, cache, input_grad=False)
        return {"W_proj": dW_proj, "b_proj": db_proj}
