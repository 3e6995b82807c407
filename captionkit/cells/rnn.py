"""The built-in vanilla RNN cell: h_t = tanh(x_t Wx + h_{t-1} Wh + b), a gated cell of one gate block."""
import numpy as np

from captionkit.cells.gated import GatedCell

__all__ = ["RNNCell"]


class RNNCell(GatedCell):
    """Vanilla (Elman) RNN with parameters Wx (W, H), Wh (H, H), b (H,); its compiled pointwise part is
    captionkit/_ext/_rnn.pyx."""

    name = "rnn"
    gates = 1
    compiled_pointwise = "captionkit._ext._rnn:CAPSULES"

    def pointwise_forward(self, a, u, prev):
        h = np.tanh(a)
        return (h,), h

    def pointwise_backward(self, dnext, h):
        # d tanh(a) / da = 1 - tanh(a)^2; h_{t-1} reaches h_t only through Wh, which the engine handles.
        return dnext[0] * (1.0 - h**2), None, (None,)
