"""The ``lstm`` cell for captionkit: the LSTM of the CS231n captioning assignment.

Parameters Wx (W, 4H), Wh (H, 4H), b (4H,), gates in the order i, f, o, g; the recurrent state is (h, c) with
c0 = 0. ``backend="cython"`` runs the compiled time loops of :mod:`captionkit_lstm.kernels`, ``"numpy"`` the
reference :mod:`captionkit_lstm.layers`.
"""
import numpy as np

from captionkit.cells import Cell, ParamSpec
from captionkit_lstm import kernels, layers

__all__ = ["LSTMCell"]


class LSTMCell(Cell):
    """Long short-term memory cell: h' = o * tanh(c'), c' = f * c + i * g."""

    name = "lstm"
    compiled = True

    def __init__(self, backend="numpy"):
        super().__init__(backend)
        if self.backend == "cython" and not kernels.is_available():
            kernels._require_loops()  # raises, saying how to build them
        self._impl = kernels if self.backend == "cython" else layers

    def parameters(self, wordvec_dim, hidden_dim):
        W, H = wordvec_dim, hidden_dim
        return {
            "Wx": ParamSpec((W, 4 * H), fan_in=W),
            "Wh": ParamSpec((H, 4 * H), fan_in=H),
            "b": ParamSpec((4 * H,)),
        }

    def initial_state(self, h0):
        return (h0, np.zeros_like(h0))

    def forward(self, x, h0, params):
        self.check_inputs(x, h0, params)
        return self._impl.lstm_forward(x, h0, params["Wx"], params["Wh"], params["b"])

    def backward(self, dh, cache):
        dx, dh0, dWx, dWh, db = self._impl.lstm_backward(dh, cache)
        return dx, dh0, {"Wx": dWx, "Wh": dWh, "b": db}

    def step(self, x, state, params):
        h, c = state
        if x.ndim != 2 or x.shape != (h.shape[0], params["Wx"].shape[0]):
            raise ValueError(
                f"lstm: step input x must be (N, W) = {(h.shape[0], params['Wx'].shape[0])}, got shape {x.shape}"
            )
        next_h, next_c, _ = layers.lstm_step_forward(x, h, c, params["Wx"], params["Wh"], params["b"])
        return (next_h, next_c)
