"""The ``gru`` cell for captionkit, written against captionkit's public plugin API only."""
from captionkit.cells import Cell, ParamSpec
from captionkit_gru.layers import gru_backward, gru_forward, gru_step_forward

__all__ = ["GRUCell"]


class GRUCell(Cell):
    """Gated recurrent unit with parameters Wx (W, 3H), Wh (H, 3H), b (3H,), gates in the order r, z, n."""

    name = "gru"

    def parameters(self, wordvec_dim, hidden_dim):
        W, H = wordvec_dim, hidden_dim
        return {
            "Wx": ParamSpec((W, 3 * H), fan_in=W),
            "Wh": ParamSpec((H, 3 * H), fan_in=H),
            "b": ParamSpec((3 * H,)),
        }

    def forward(self, x, h0, params):
        self.check_inputs(x, h0, params)  # clear errors on wrong shapes, from the base class
        return gru_forward(x, h0, params["Wx"], params["Wh"], params["b"])

    def backward(self, dh, cache):
        dx, dh0, dWx, dWh, db = gru_backward(dh, cache)
        return dx, dh0, {"Wx": dWx, "Wh": dWh, "b": db}

    def step(self, x, state, params):
        (h,) = state
        if x.shape != (h.shape[0], params["Wx"].shape[0]):
            raise ValueError(f"gru: step input x must be (N, W) = {(h.shape[0], params['Wx'].shape[0])}, got {x.shape}")
        return (gru_step_forward(x, h, params["Wx"], params["Wh"], params["b"]),)
