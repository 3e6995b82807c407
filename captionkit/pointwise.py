"""What the gated recurrence engine knows of a cell: its form and its pointwise part.

A gated cell computes, at each step, input pre-activations ``a = x_t Wx + b`` (N, G*H) and recurrent ones
``u = h_{t-1} Wh`` (N, G*H), and then updates its state (S arrays of (N, H), h first) elementwise. The engine does
the products; the cell gives the elementwise part as numpy functions (always: they are the reference) and, if it
wants compiled speed, as C functions in capsules (captionkit/_ext/pointwise.pxd). :class:`Pointwise` carries both
down to the engine, and calls the numpy functions with their results checked, so a cell that returns the wrong
thing is named in the error rather than failing somewhere inside the engine. :func:`extension` builds a plugin's
compiled pointwise part.
"""
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from captionkit._about import get_include

__all__ = ["MAX_STATES", "Pointwise", "extension", "form_problem"]

MAX_STATES = 8  # the compiled engine passes state pointers in arrays of this size


def _is_int(value, low):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low


def form_problem(gates, states, summed, kept):
    """None when a cell of G ``gates``, S ``states``, ``summed`` and ``kept`` (None: G) is one the engine runs,
    else what is wrong."""
    if not _is_int(gates, 1):
        return f"gates must be an integer >= 1, got {gates!r}"
    if not (_is_int(states, 1) and states <= MAX_STATES):
        return f"states must be an integer in [1, {MAX_STATES}], got {states!r}"
    if not isinstance(summed, bool):
        return f"summed must be True or False, got {summed!r}"
    if kept is not None and not _is_int(kept, gates):
        return f"kept must be an integer >= gates ({gates}), got {kept!r}"
    return None


@dataclass(frozen=True, eq=False)
class Pointwise:
    """A gated cell's form and pointwise part, as the engine (``layers.gated_*``, ``kernels.gated_*``) takes it.

    - ``name``: the cell's name, for messages.
    - ``gates`` G: Wx is (W, G*H), Wh (H, G*H), b (G*H,).
    - ``states`` S: the state is S arrays of (N, H), h first; all but h start at zero.
    - ``summed``: the pointwise part reads only ``a + u``, so the engine passes that sum as ``a`` and ``u`` as None
      (and takes ``da`` as the gradient of u too); otherwise it passes them apart (a GRU's ``r * u_n``).
    - ``kept`` K >= G: H-wide blocks per row and step the compiled forward may fill for its backward.
    - ``forward(a, u, prev) -> (next, saved)`` and ``backward(dnext, saved) -> (da, du, dprev)``: the numpy
      pointwise part on one step's rows (see :meth:`run_forward` and :meth:`run_backward`); None only when
      ``capsules`` are given and only the compiled engine runs the cell.
    - ``capsules``: the compiled pointwise part (the dict of pointwise.pxd's ``pointwise_capsules``), or None.
    """

    name: str
    gates: int
    forward: Callable | None = None
    backward: Callable | None = None
    states: int = 1
    summed: bool = True
    kept: int | None = None
    capsules: Mapping | None = None

    def __post_init__(self):
        problem = form_problem(self.gates, self.states, self.summed, self.kept)
        if problem is not None:
            raise ValueError(f"cell {self.name!r}: {problem}")
        if self.kept is None:
            object.__setattr__(self, "kept", self.gates)
        numpy = (self.forward, self.backward)
        if numpy != (None, None) and not all(callable(f) for f in numpy):
            raise ValueError(f"cell {self.name!r}: the numpy pointwise forward and backward must be callable")
        if numpy == (None, None) and self.capsules is None:
            raise ValueError(f"cell {self.name!r}: give the pointwise part as numpy functions, capsules or both")

    def initial_state(self, h0):
        """The state at t = 0: h0 (N, H), then zeros for the other state arrays."""
        return (h0,) + tuple(np.zeros_like(h0) for _ in range(self.states - 1))

    def run_forward(self, a, u, prev):
        """``forward(a, u, prev)`` on one step's N rows -> (next state tuple, what it saved), checked.

        a (N, G*H): x_t Wx + b (summed cells: plus h_{t-1} Wh); u (N, G*H) or None: h_{t-1} Wh; prev: the state
        tuple at t-1. Inputs are the engine's and must not be modified.
        """
        result = self.forward(a, u, prev)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise ValueError(f"cell {self.name!r}: pointwise_forward must return (next_state, saved), got "
                             f"{type(result).__name__}")
        next_state, saved = result
        self._check_state("pointwise_forward's next state", next_state, prev[0].shape)
        return next_state, saved

    def run_backward(self, dnext, saved):
        """``backward(dnext, saved)`` -> (da, du, dprev), checked; du is None for summed cells and dprev's entries
        are arrays or None (nothing flows back to that state array except through Wh).

        dnext: the loss's gradient of the state at t (h's complete). dprev: the gradient of the state at t-1 through
        this step's arithmetic alone; the engine adds what flows back through Wh.
        """
        result = self.backward(dnext, saved)
        if not (isinstance(result, tuple) and len(result) == 3):
            raise ValueError(f"cell {self.name!r}: pointwise_backward must return (da, du, dprev), got "
                             f"{type(result).__name__}")
        da, du, dprev = result
        rows, hidden = dnext[0].shape
        wide = (rows, self.gates * hidden)
        self._check_array("pointwise_backward's da", da, wide)
        if self.summed:
            if du is not None:
                raise ValueError(f"cell {self.name!r} is summed: pointwise_backward must return du = None (da is "
                                 "the gradient of a + u)")
        else:
            self._check_array("pointwise_backward's du", du, wide)
        if not (isinstance(dprev, tuple) and len(dprev) == self.states):
            raise ValueError(f"cell {self.name!r}: pointwise_backward's dprev must be a tuple of {self.states} "
                             f"arrays or None, got {type(dprev).__name__}")
        for s, d in enumerate(dprev):
            if d is not None:
                self._check_array(f"pointwise_backward's dprev[{s}]", d, (rows, hidden))
        return da, du, dprev

    def _check_state(self, what, state, shape):
        if not (isinstance(state, tuple) and len(state) == self.states):
            raise ValueError(f"cell {self.name!r}: {what} must be a tuple of {self.states} arrays, got "
                             f"{type(state).__name__}")
        for s, array in enumerate(state):
            self._check_array(f"{what}[{s}]", array, shape)

    def _check_array(self, what, array, shape):
        if getattr(array, "shape", None) != tuple(shape):
            raise ValueError(f"cell {self.name!r}: {what} must have shape {tuple(shape)}, got "
                             f"{getattr(array, 'shape', type(array).__name__)}")


def extension(module, source):
    """The compiled extension of a cell plugin's pointwise part, for its setup.py: ``setup(ext_modules=
    extension("my_cell._pointwise", "my_cell/_pointwise.pyx"))``. The module cimports captionkit's shipped
    captionkit/_ext/pointwise.pxd, so it is built against the installed captionkit, without build isolation
    (``pip install --no-build-isolation ...``)."""
    import sysconfig

    from Cython.Build import cythonize
    from setuptools import Extension

    arguments = ["-O3"]
    if "gcc" in (sysconfig.get_config_var("CC") or ""):
        # A pointwise loop reads and writes many rows at once, and GCC vectorises a loop only after checking at run
        # time that they do not overlap; its default allows too few checks for an LSTM's backward (which then ran
        # scalar, about a twentieth of the backward pass).
        arguments += ["--param", "vect-max-version-for-alias-checks=100"]
    return cythonize([Extension(module, [source], extra_compile_args=arguments)], include_path=[get_include()],
                     language_level=3)
