"""The ``lstm`` cell for captionkit: the LSTM of the CS231n captioning assignment, on captionkit's recurrence engine.

Parameters Wx (W, 4H), Wh (H, 4H), b (4H,), gates in the order i, f, o, g; the recurrent state is (h, c) with
c0 = 0. The engine does the products and the time loops; this cell gives the gate arithmetic, in numpy (below: the
reference, run on the ``numpy`` backend) and in C (:mod:`captionkit_lstm._pointwise`, run on the ``cython`` one).
"""
import numpy as np

from captionkit.cells import GatedCell
from captionkit.layers import sigmoid

__all__ = ["LSTMCell"]


class LSTMCell(GatedCell):
    """Long short-term memory cell: c' = f * c + i * g, h' = o * tanh(c')."""

    name = "lstm"
    gates = 4
    states = 2  # h, c
    kept = 5  # the compiled forward keeps tanh(c') beside the four activated gates
    compiled_pointwise = "captionkit_lstm._pointwise:CAPSULES"

    def pointwise_forward(self, a, u, prev):
        h, c = prev
        H = h.shape[1]
        i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H]), sigmoid(a[:, 2 * H : 3 * H])
        g = np.tanh(a[:, 3 * H :])
        next_c = f * c + i * g
        tanh_c = np.tanh(next_c)
        return (o * tanh_c, next_c), (i, f, o, g, c, tanh_c)

    def pointwise_backward(self, dnext, saved):
        dh, dnext_c = dnext
        i, f, o, g, c, tanh_c = saved
        dc = dnext_c + dh * o * (1 - tanh_c**2)  # h' = o * tanh(c') routes dh into c' as well
        da = np.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f), dh * tanh_c * o * (1 - o),
                             dc * i * (1 - g**2)], axis=1)
        return da, None, (None, dc * f)
