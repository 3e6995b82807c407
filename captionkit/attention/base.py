"""The attention-mechanism interface: how a decoder looks at a grid of image regions at each word.

At step t a mechanism reads the decoder's previous hidden state h (N, H) and the image's regions V (N, L, D) and
gives a glimpse g (N, D), the part of the image the cell reads at this step, and the weights alpha (N, L) it put on
each region (for the doubly stochastic penalty and for attention maps). What depends on the image alone (e.g. the
regions' projection ``V Ua``) is computed once per sequence by :meth:`AttentionMechanism.prepare`, not per step.

Every method is numpy, written shape by shape: it is the reference that gradient checks and compiled versions are
held to. docs/attention.md walks through writing another mechanism.

Shapes: N rows, L regions, D feature size, H hidden size, A attention size.
"""
import abc

__all__ = ["AttentionMechanism", "AttentionSizes"]


class AttentionSizes:
    """The sizes a mechanism sees: feature size D, hidden size H and attention size A."""

    __slots__ = ("feature_dim", "hidden_dim", "attention_dim")

    def __init__(self, feature_dim, hidden_dim, attention_dim):
        self.feature_dim, self.hidden_dim, self.attention_dim = int(feature_dim), int(hidden_dim), int(attention_dim)

    def __repr__(self):
        return (f"AttentionSizes(feature_dim={self.feature_dim}, hidden_dim={self.hidden_dim}, "
                f"attention_dim={self.attention_dim})")


class AttentionMechanism(abc.ABC):
    """Base class of attention mechanisms. Subclasses set ``name`` and implement the five methods below.

    Parameter names must start with ``att_`` so they can never clash with a cell's or the model's.
    """

    name = None
    precision = "fp32"  # of the mechanism's matrix products (use_precision)

    def use_precision(self, precision):
        """Run the mechanism's matrix products at ``precision`` (:data:`captionkit.precision.PRECISIONS`). A
        mechanism's numpy methods compute their own products, so by default only "fp32": ValueError naming it
        otherwise (soft attention, which the engine runs, also takes "bf16")."""
        if precision != "fp32":
            raise ValueError(f"attention {self.name!r} computes its own matrix products in numpy, so it cannot run at "
                             f"precision={precision!r}; use precision 'fp32', or attention 'soft'")

    @abc.abstractmethod
    def parameters(self, sizes):
        """Ordered dict ``{name: ParamSpec}`` for :class:`AttentionSizes` ``sizes``; values are drawn in this
        order."""

    @abc.abstractmethod
    def prepare(self, V, params):
        """Once per sequence: V (N, L, D) -> (keys, cache), ``keys`` what :meth:`forward` reads at every step (any
        array with N rows, e.g. ``V Ua`` (N, L, A))."""

    @abc.abstractmethod
    def prepare_backward(self, dkeys, cache):
        """Backward of :meth:`prepare`: the gradient of keys, summed over the steps -> (dV (N, L, D), grads)."""

    @abc.abstractmethod
    def forward(self, h, V, keys, params):
        """One step: h (N, H) the previous hidden state -> (g (N, D), alpha (N, L), saved for :meth:`backward`)."""

    def runs_on_engine(self):
        """Whether captionkit's compiled engine runs this mechanism's equations in place of its numpy methods; only
        soft attention's are compiled (captionkit/_ext/_attend.pyx), every other mechanism runs on its numpy methods."""
        return False

    @abc.abstractmethod
    def backward(self, dg, dalpha, saved):
        """Backward of :meth:`forward`: dg (N, D) and dalpha (N, L) (the penalty's gradient, or zeros) ->
        (dh (N, H), dV (N, L, D), dkeys (shaped like keys), grads ``{name: array}`` of this step)."""
