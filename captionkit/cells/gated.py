"""GatedCell: a recurrent cell given by its pointwise part, which captionkit's recurrence engine runs.

Most recurrent cells compute, at each step, pre-activations from the input (``a = x_t Wx + b``) and from the
recurrence (``u = h_{t-1} Wh``) and then update their state elementwise. A cell of that form subclasses GatedCell,
declares its number of gate blocks, and writes only that elementwise part, in numpy (the reference, required) and
optionally in C (a capsule, see captionkit/_ext/pointwise.pxd). The engine does every matrix product, the time
loops forward and backward, decoding steps and greedy decoding, compiled on the ``cython`` backend whichever kind
of pointwise part the cell has. docs/cells.md walks through an example.
"""
import abc
import importlib

from captionkit.backend import ops
from captionkit.cells.base import Cell, ParamSpec
from captionkit.pointwise import Pointwise, form_problem

__all__ = ["GatedCell"]


class GatedCell(Cell):
    """A cell of the engine's form. Subclasses set:

    - ``name``, and ``gates`` G: the parameters are Wx (W, G*H), Wh (H, G*H), b (G*H,);
    - ``states`` S (default 1): the state is S arrays of (N, H), h first, all but h starting at zero;
    - ``summed`` (default True): the pointwise part reads only ``a + u``; False passes them apart;
    - ``kept`` (default G): H-wide blocks per row and step that the compiled forward may fill for its backward;
    - ``compiled_pointwise`` (optional): ``"module:attribute"`` naming the dict of ``pointwise_capsules``;

    and implement :meth:`pointwise_forward` and :meth:`pointwise_backward` in numpy.
    """

    gates = None
    states = 1
    summed = True
    kept = None
    compiled_pointwise = None
    compiled = True  # the engine runs every gated cell compiled, with numpy callbacks when it has no capsules

    def __init__(self, backend="numpy"):
        super().__init__(backend)
        capsules = self.capsules() if self.backend == "cython" else None
        self.pointwise = Pointwise(self.name, self.gates, self.pointwise_forward, self.pointwise_backward,
                                   self.states, self.summed, self.kept, capsules)
        self._ops = ops(self.backend)

    @abc.abstractmethod
    def pointwise_forward(self, a, u, prev):
        """One step's update of all N rows: a (N, G*H) = x_t Wx + b (summed cells: plus h_{t-1} Wh), u (N, G*H) =
        h_{t-1} Wh or None (summed cells), prev the state tuple at t-1 -> (next state tuple, saved), ``saved``
        being anything :meth:`pointwise_backward` needs. The inputs are the engine's: do not modify them."""

    @abc.abstractmethod
    def pointwise_backward(self, dnext, saved):
        """Backward of :meth:`pointwise_forward`: dnext, the loss's gradient of the state at t (a tuple, h's
        complete), and what the forward saved -> (da (N, G*H), du (N, G*H) or None for summed cells, dprev), dprev
        a tuple with the gradient of each state array at t-1 through this step's arithmetic alone (None: nothing).
        The engine adds what flows back to h_{t-1} through Wh."""

    @classmethod
    def capsules(cls):
        """The compiled pointwise part named by ``compiled_pointwise`` (imported on first use), or None."""
        if cls.compiled_pointwise is None:
            return None
        module_name, _, attribute = cls.compiled_pointwise.partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    @classmethod
    def declaration_problem(cls):
        """None when the class declares a form the engine runs and a compiled part it can call (when it names one
        and captionkit's kernels are built), else what is wrong; the registry refuses the cell for it."""
        problem = form_problem(cls.gates, cls.states, cls.summed, cls.kept)
        if problem is not None or cls.compiled_pointwise is None:
            return problem
        if not (isinstance(cls.compiled_pointwise, str) and ":" in cls.compiled_pointwise):
            return f"compiled_pointwise must be 'module:attribute', got {cls.compiled_pointwise!r}"
        from captionkit import kernels

        if not kernels.is_available():  # every model runs on numpy then
            return None
        try:
            capsules = cls.capsules()
        except Exception as exc:  # a plugin's extension may fail to import in any way
            return f"its compiled pointwise part {cls.compiled_pointwise} does not import: {type(exc).__name__}: {exc}"
        return kernels.capsule_problem(capsules)

    # ------------------------------------------------------------------ the Cell interface, run by the engine
    def parameters(self, wordvec_dim, hidden_dim):
        W, H, G = wordvec_dim, hidden_dim, self.gates
        return {
            "Wx": ParamSpec((W, G * H), fan_in=W),
            "Wh": ParamSpec((H, G * H), fan_in=H),
            "b": ParamSpec((G * H,)),
        }

    def initial_state(self, h0):
        return self.pointwise.initial_state(h0)

    def use_precision(self, precision):
        """The engine's products at ``precision``: the layer functions of this backend at it
        (:func:`captionkit.backend.runtime`, the model's own), so that the pointwise part never sees bf16."""
        self._ops = ops(self.backend, precision)

    def step_blocks(self, sizes):
        """h and the G gate blocks, per row and step."""
        return 1 + self.pointwise.gates

    def forward(self, x, h0, params):
        self.check_inputs(x, h0, params)
        return self._ops.gated_forward(x, h0, params["Wx"], params["Wh"], params["b"], self.pointwise)

    def backward(self, dh, cache):
        dx, dh0, dWx, dWh, db = self._ops.gated_backward(dh, cache)
        return dx, dh0, {"Wx": dWx, "Wh": dWh, "b": db}

    def step(self, x, state, params):
        W = params["Wx"].shape[0]
        if x.ndim != 2 or x.shape != (state[0].shape[0], W):
            raise ValueError(f"{self.name}: step input x must be (N, W) = {(state[0].shape[0], W)}, got shape "
                             f"{x.shape}")
        return self._ops.gated_step(x, state, params["Wx"], params["Wh"], params["b"], self.pointwise)

    def greedy_decode(self, h0, params, W_embed, W_vocab, b_vocab, start, end, null, max_length):
        if self.backend != "cython":
            return None  # the model's step loop is the numpy reference
        return self._ops.gated_greedy_decode(h0, W_embed, params["Wx"], params["Wh"], params["b"], W_vocab,
                                             b_vocab, start, end, null, max_length, self.pointwise)

