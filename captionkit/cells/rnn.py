"""The built-in vanilla RNN cell: h_t = tanh(x_t @ Wx + h_{t-1} @ Wh + b)."""
from captionkit import kernels, layers
from captionkit.cells.base import Cell, ParamSpec

__all__ = ["RNNCell"]


class RNNCell(Cell):
    """Vanilla (Elman) RNN with parameters Wx (W, H), Wh (H, H), b (H,)."""

    name = "rnn"
    compiled = True

    @property
    def _ops(self):
        """The functions this cell runs: captionkit.kernels or the numpy reference, which share their signatures."""
        return kernels if self.backend == "cython" else layers

    def parameters(self, wordvec_dim, hidden_dim):
        return {
            "Wx": ParamSpec((wordvec_dim, hidden_dim), fan_in=wordvec_dim),
            "Wh": ParamSpec((hidden_dim, hidden_dim), fan_in=hidden_dim),
            "b": ParamSpec((hidden_dim,)),
        }

    def forward(self, x, h0, params):
        self.check_inputs(x, h0, params)
        return self._ops.rnn_forward(x, h0, params["Wx"], params["Wh"], params["b"])

    def backward(self, dh, cache):
        dx, dh0, dWx, dWh, db = self._ops.rnn_backward(dh, cache)
        return dx, dh0, {"Wx": dWx, "Wh": dWh, "b": db}

    def step(self, x, state, params):
        (h,) = state
        next_h, _ = self._ops.rnn_step_forward(x, h, params["Wx"], params["Wh"], params["b"])
        return (next_h,)

    def greedy_decode(self, h0, params, W_embed, W_vocab, b_vocab, start, end, null, max_length):
        if self.backend != "cython":
            return None
        return kernels.rnn_greedy_decode(h0, W_embed, params["Wx"], params["Wh"], params["b"], W_vocab, b_vocab,
                                         start, end, null, max_length)
