"""Soft attention with a gate ("Show, Attend and Tell", Xu et al. 2015, as its common PyTorch tutorial writes it).

Per step, with the regions V (N, L, D) and the previous hidden state h (N, H)::

    keys  = V Ua                                   (N, L, A)   once per sequence
    q     = h Wa + ba                              (N, A)
    s     = tanh(keys + q[:, None, :])             (N, L, A)
    e     = s wa                                   (N, L)      a score per region
    alpha = softmax over L of e                    (N, L)
    z     = sum_l alpha[:, l, None] V[:, l]        (N, D)      the attended features
    beta  = sigmoid(h Wbeta + bbeta)               (N, D)      a gate: how much of z to read at this step
    g     = beta * z                               (N, D)

The gate is D wide, as in the tutorial (Xu et al. write a scalar); the cell adds ``g Wz`` to its input
pre-activations. At precision "bf16" the products with a weight matrix (V Ua, h Wa, h Wbeta, and their backward
products) take bfloat16-rounded inputs (:func:`captionkit.precision.product`), as the compiled engine's do; the
scores s wa, the softmax and the weighted sum stay float32.
"""
import numpy as np

from captionkit.attention.base import AttentionMechanism
from captionkit.cells.base import ParamSpec
from captionkit.precision import check_precision, product

__all__ = ["SoftAttention"]


def _sigmoid(x):
    # Written on |x| so neither branch overflows: exp(-|x|) is at most 1.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class SoftAttention(AttentionMechanism):
    """Additive soft attention with a sigmoid gate on the glimpse. Parameters: att_Ua (D, A), att_Wa (H, A),
    att_ba (A,), att_wa (A,), att_Wbeta (H, D), att_bbeta (D,)."""

    name = "soft"

    def parameters(self, sizes):
        D, H, A = sizes.feature_dim, sizes.hidden_dim, sizes.attention_dim
        return {
            "att_Ua": ParamSpec((D, A), fan_in=D),
            "att_Wa": ParamSpec((H, A), fan_in=H),
            "att_ba": ParamSpec((A,)),
            "att_wa": ParamSpec((A,), fan_in=A),
            "att_Wbeta": ParamSpec((H, D), fan_in=H),
            "att_bbeta": ParamSpec((D,)),
        }

    def use_precision(self, precision):
        """Products at ``precision``; "bf16" only for these very equations (a subclass that changes them has its own
        products), which the engine and :func:`captionkit.precision.product` both compute."""
        check_precision(precision)
        if precision != "fp32" and not self.runs_on_engine():
            super().use_precision(precision)  # refuses, naming the mechanism
        self.precision = precision

    def runs_on_engine(self):
        # The engine computes exactly these equations: a subclass that changes any of them runs on its own methods.
        return all(getattr(type(self), name) is getattr(SoftAttention, name)
                   for name in ("parameters", "prepare", "prepare_backward", "forward", "backward"))

    def prepare(self, V, params):
        return product(V, params["att_Ua"], self.precision), (V, params["att_Ua"])

    def prepare_backward(self, dkeys, cache):
        V, Ua = cache
        N, L, D = V.shape
        return product(dkeys, Ua.T, self.precision), {
            "att_Ua": product(V.reshape(N * L, D).T, dkeys.reshape(N * L, -1), self.precision)}

    def forward(self, h, V, keys, params):
        q = product(h, params["att_Wa"], self.precision) + params["att_ba"]  # (N, A)
        s = np.tanh(keys + q[:, None, :])                                # (N, L, A)
        e = s @ params["att_wa"]                                         # (N, L)
        e = np.exp(e - e.max(axis=1, keepdims=True))
        alpha = e / e.sum(axis=1, keepdims=True)                         # (N, L)
        z = np.einsum("nl,nld->nd", alpha, V)                            # (N, D)
        beta = _sigmoid(product(h, params["att_Wbeta"], self.precision) + params["att_bbeta"])  # (N, D)
        saved = (h, V, s, alpha, z, beta, params)
        return beta * z, alpha, saved

    def backward(self, dg, dalpha, saved):
        h, V, s, alpha, z, beta, params = saved
        dz = dg * beta                                                   # (N, D)
        dbeta_in = dg * z * beta * (1.0 - beta)                          # through the sigmoid
        dalpha = dalpha + np.einsum("nd,nld->nl", dz, V)                 # z = sum_l alpha_l V_l
        dV = alpha[:, :, None] * dz[:, None, :]                          # (N, L, D)
        de = alpha * (dalpha - (alpha * dalpha).sum(axis=1, keepdims=True))  # softmax backward
        grads = {"att_wa": np.einsum("nl,nla->a", de, s)}
        ds = de[:, :, None] * params["att_wa"] * (1.0 - s**2)            # (N, L, A), through tanh
        dq = ds.sum(axis=1)                                              # (N, A)
        grads["att_Wa"] = product(h.T, dq, self.precision)
        grads["att_ba"] = dq.sum(axis=0)
        grads["att_Wbeta"] = product(h.T, dbeta_in, self.precision)
        grads["att_bbeta"] = dbeta_in.sum(axis=0)
        dh = product(dq, params["att_Wa"].T, self.precision) + product(dbeta_in, params["att_Wbeta"].T, self.precision)
        return dh, dV, ds, grads
