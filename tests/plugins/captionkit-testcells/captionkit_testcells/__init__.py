"""Test cells for captionkit: ``gru_numpy`` (a gated cell with a numpy pointwise part only) and ``mgu`` (a cell that
does not fit the recurrence engine, on the plain Cell interface)."""
import numpy as np

from captionkit.cells import Cell, ParamSpec
from captionkit.layers import sigmoid
from captionkit_gru import GRUCell

__all__ = ["MGUCell", "NumpyGRUCell"]


class NumpyGRUCell(GRUCell):
    """captionkit-gru's GRU without its compiled pointwise part: the same equations, numpy callbacks only."""

    name = "gru_numpy"
    compiled_pointwise = None


class MGUCell(Cell):
    """Minimal gated unit, with Wx (W, 2H) = [Wf | Wn], Uf (H, H), Un (H, H), b (2H,) = [bf | bn]:

        f = sigmoid(x Wf + h Uf + bf)    n = tanh(x Wn + (f * h) Un + bn)    h' = (1 - f) * h + f * n
    """

    name = "mgu"

    def parameters(self, wordvec_dim, hidden_dim):
        W, H = wordvec_dim, hidden_dim
        return {"Wx": ParamSpec((W, 2 * H), fan_in=W), "Uf": ParamSpec((H, H), fan_in=H),
                "Un": ParamSpec((H, H), fan_in=H), "b": ParamSpec((2 * H,))}

    def _step(self, x_Wx, h, params):
        H = h.shape[1]
        f = sigmoid(x_Wx[:, :H] + h @ params["Uf"])
        g = f * h
        n = np.tanh(x_Wx[:, H:] + g @ params["Un"])
        return h + f * (n - h), (h, f, g, n)

    def forward(self, x, h0, params):
        self.check_inputs(x, h0, params)
        x_Wx = x @ params["Wx"] + params["b"]
        h, steps = np.empty(x.shape[:2] + h0.shape[1:], dtype=np.result_type(x, h0)), []
        prev = h0
        for t in range(x.shape[1]):
            prev, saved = self._step(x_Wx[:, t], prev, params)
            h[:, t] = prev
            steps.append(saved)
        return h, (x, params, steps)

    def backward(self, dh, cache):
        x, params, steps = cache
        N, T, H = dh.shape
        da = np.empty((N, T, 2 * H), dtype=dh.dtype)  # gradients of the pre-activations of f and n
        dUf, dUn = np.zeros_like(params["Uf"]), np.zeros_like(params["Un"])
        dnext = np.zeros((N, H), dtype=dh.dtype)
        for t in reversed(range(T)):
            h, f, g, n = steps[t]
            d = dh[:, t] + dnext
            dan = d * f * (1 - n**2)
            dg = dan @ params["Un"].T
            daf = (d * (n - h) + dg * h) * f * (1 - f)
            dUn += g.T @ dan
            dUf += h.T @ daf
            dnext = d * (1 - f) + dg * f + daf @ params["Uf"].T
            da[:, t, :H], da[:, t, H:] = daf, dan
        da_flat = da.reshape(N * T, 2 * H)
        grads = {"Wx": x.reshape(N * T, -1).T @ da_flat, "Uf": dUf, "Un": dUn, "b": da_flat.sum(axis=0)}
        return (da_flat @ params["Wx"].T).reshape(x.shape), dnext, grads

    def step(self, x, state, params):
        (h,) = state
        if x.ndim != 2 or x.shape != (h.shape[0], params["Wx"].shape[0]):
            raise ValueError(f"mgu: step input x must be (N, W) = {(h.shape[0], params['Wx'].shape[0])}, got "
                             f"shape {x.shape}")
        return (self._step(x @ params["Wx"] + params["b"], h, params)[0],)
