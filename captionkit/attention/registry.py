"""The attention registry: maps ``--attention`` names to mechanisms (a :class:`captionkit.plugins.PluginRegistry`).

``soft`` (:class:`~captionkit.attention.soft.SoftAttention`) is built in; plugins add mechanisms through the
entry-point group ``captionkit.attention``. A mechanism from an entry point is run once on tiny inputs when first
asked for (:func:`shape_problem`), so one whose declared parameters, forward and backward do not fit together is
refused with its distribution named, before a model trains with it.
"""
import numpy as np

from captionkit.attention.base import AttentionMechanism, AttentionSizes
from captionkit.plugins import PluginLoadError, PluginRegistry, UnknownPluginError

__all__ = ["ENTRY_POINT_GROUP", "AttentionLoadError", "AttentionRegistry", "UnknownAttentionError",
           "available_attention", "get_attention", "register_attention", "shape_problem"]

ENTRY_POINT_GROUP = "captionkit.attention"
BUILTIN_ATTENTION = {"soft": "captionkit.attention.soft:SoftAttention"}


class UnknownAttentionError(UnknownPluginError):
    """No attention mechanism is registered under the requested name."""


class AttentionLoadError(PluginLoadError):
    """A registered mechanism could not be imported, is not an AttentionMechanism subclass, or is broken."""


def shape_problem(mechanism_class):
    """Run ``mechanism_class`` once on tiny float64 inputs; None when every output has the shape its declaration
    implies, else a message saying what does not fit."""
    N, L, D, H, A = 2, 3, 4, 5, 6
    sizes = AttentionSizes(D, H, A)
    rng = np.random.RandomState(0)
    try:
        mechanism = mechanism_class()
        declared = mechanism.parameters(sizes)
        params = {name: spec.initial_value(rng) for name, spec in declared.items()}
        V, h = rng.standard_normal((N, L, D)), rng.standard_normal((N, H))
        keys, prepare_cache = mechanism.prepare(V, params)
        g, alpha, saved = mechanism.forward(h, V, keys, params)
        dh, dV, dkeys, grads = mechanism.backward(np.ones_like(g), np.zeros_like(alpha), saved)
        dV_prepare, prepare_grads = mechanism.prepare_backward(dkeys, prepare_cache)
    except Exception as exc:  # plugin code may raise anything
        return f"running it on tiny inputs (N={N}, L={L}, D={D}, H={H}, A={A}) raised {type(exc).__name__}: {exc}"
    if not all(isinstance(name, str) and name.startswith("att_") for name in declared):
        return f"parameter names must start with 'att_', got {sorted(declared)}"
    outputs = {"forward's g": (g, (N, D)), "forward's alpha": (alpha, (N, L)), "backward's dh": (dh, (N, H)),
               "backward's dV": (dV, (N, L, D)), "backward's dkeys": (dkeys, np.shape(keys)),
               "prepare_backward's dV": (dV_prepare, (N, L, D))}
    found = set(grads) | set(prepare_grads)
    if found != set(params):
        return f"backward and prepare_backward gave gradients for {sorted(found)}, expected {sorted(params)}"
    for what, (value, shape) in outputs.items():
        if getattr(value, "shape", None) != tuple(shape):
            return f"{what} has shape {getattr(value, 'shape', type(value).__name__)}, expected {tuple(shape)}"
    return None


class AttentionRegistry(PluginRegistry):
    """A set of attention-mechanism sources with lazy loading; captionkit uses one module-level instance."""

    kind = "attention mechanism"
    name_label = "attention"
    base = AttentionMechanism
    base_name = "captionkit.attention.AttentionMechanism"
    unknown_error = UnknownAttentionError
    load_error = AttentionLoadError

    def __init__(self, builtins=None, entry_point_group=ENTRY_POINT_GROUP, autoload_plugins=None):
        super().__init__(BUILTIN_ATTENTION if builtins is None else builtins, entry_point_group, autoload_plugins)

    def problem(self, target, source):
        return shape_problem(target) if source.origin == "entry point" else None


_default_registry = AttentionRegistry()


def register_attention(name, mechanism, replace=False):
    """Register a mechanism under ``name`` in captionkit's registry (see :meth:`PluginRegistry.register`)."""
    _default_registry.register(name, mechanism, replace=replace)


def get_attention(name):
    """The AttentionMechanism subclass registered as ``name`` (see :meth:`PluginRegistry.load`)."""
    return _default_registry.load(name)


def available_attention():
    """Sorted names of all registered attention mechanisms, plugins included, without importing plugins."""
    return _default_registry.available()
