"""The ``gru`` cell for captionkit, written against captionkit's public plugin API only.

A GRU fits captionkit's recurrence engine: each step takes a = x Wx + b and u = h Wh in blocks r, z, n and updates h
elementwise. The engine passes a and u apart (``summed = False``) because n scales u's block by r.
"""
import numpy as np

from captionkit.cells import GatedCell
from captionkit.layers import sigmoid

__all__ = ["GRUCell"]


class GRUCell(GatedCell):
    """Gated recurrent unit with parameters Wx (W, 3H), Wh (H, 3H), b (3H,), gates in the order r, z, n:
    r = sigmoid(a_r + u_r), z = sigmoid(a_z + u_z), n = tanh(a_n + r * u_n), h' = (1 - z) * n + z * h."""

    name = "gru"
    gates = 3
    summed = False
    compiled_pointwise = "captionkit_gru._pointwise:CAPSULES"

    def pointwise_forward(self, a, u, prev):
        (h,) = prev
        H = h.shape[1]
        r = sigmoid(a[:, :H] + u[:, :H])
        z = sigmoid(a[:, H : 2 * H] + u[:, H : 2 * H])
        n = np.tanh(a[:, 2 * H :] + r * u[:, 2 * H :])
        return ((1 - z) * n + z * h,), (r, z, n, u[:, 2 * H :], h)

    def pointwise_backward(self, dnext, saved):
        (dh,) = dnext
        r, z, n, u_n, h = saved
        dn = dh * (1 - z) * (1 - n**2)
        dz = dh * (h - n) * z * (1 - z)
        dr = dn * u_n * r * (1 - r)
        # u_n enters n scaled by r; h reaches h' directly through z * h.
        return np.concatenate([dr, dz, dn], axis=1), np.concatenate([dr, dz, dn * r], axis=1), (dh * z,)
