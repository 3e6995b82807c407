"""AttendedCell: any gated cell reading, at every step, a glimpse of the image that an attention mechanism chose.

The wrapped cell's step becomes (Xu et al. 2015, with the cell's own pointwise part unchanged)::

    g_t, alpha_t = mechanism(h_{t-1}, V)                    g (N, D), alpha (N, L)
    a_t = x_t Wx + b + g_t att_Wz                           (N, G*H): the input pre-activations, plus the glimpse
    u_t = h_{t-1} Wh                                        (N, G*H)
    state_t = cell.pointwise_forward(a_t (+ u_t), ...)

h0 comes from the model's conditioning (the mean of V, projected); the cell's further state arrays (an LSTM's c)
start from the same mean through their own projections att_W_init{s}, att_b_init{s}. This module is the numpy
reference, written step by step; a gated cell's ``pointwise_forward``/``pointwise_backward`` are called as the
engine calls them. On the ``cython`` backend a mechanism the engine runs (soft attention:
``mechanism.runs_on_engine()``) takes the compiled path instead, :mod:`captionkit.kernels`'s ``soft_attended_*``
functions, which follow this reference equation for equation; any other mechanism runs here.

Shapes: N rows, T steps, W word-vector size, H hidden size, G gate blocks, S state arrays, L regions, D feature
size, A attention size.
"""
import numpy as np

from captionkit.attention.base import AttentionSizes
from captionkit.backend import ops
from captionkit.cells.base import Cell, ParamSpec
from captionkit.cells.gated import GatedCell
from captionkit.precision import check_precision, product

__all__ = ["AttendedCell"]


class AttendedCell(Cell):
    """``inner`` (a :class:`GatedCell` instance) with ``mechanism`` (an AttentionMechanism instance) of attention size
    ``attention_dim``. Its context is the grid V (N, L, D); its decoding state is the inner cell's state followed by
    the last step's attention weights (N, L), so beam search reorders the weights with their hypotheses."""

    reads_context = True

    def __init__(self, inner, mechanism, attention_dim, backend="numpy"):
        if not isinstance(inner, GatedCell):
            raise ValueError(f"attention wraps gated cells (captionkit.cells.GatedCell); cell {inner.name!r} is a "
                             f"{type(inner).__name__}")
        self.inner, self.mechanism, self.attention_dim = inner, mechanism, int(attention_dim)
        self.name = f"{inner.name}+{mechanism.name}"
        self.compiled = mechanism.runs_on_engine() and inner.backend == backend  # Cell.__init__ reads it
        super().__init__(backend)
        self.precision = "fp32"
        self._ops = ops(self.backend)
        if self.backend == "cython":
            from captionkit import kernels

            self._engine = kernels

    def use_precision(self, precision):
        """Every product at ``precision``: this wrapper's (which are the wrapped cell's too: it only lends its
        pointwise part), the mechanism's (which refuses "bf16" unless the engine runs it) and the initial state's
        projections."""
        check_precision(precision)
        self.mechanism.use_precision(precision)
        self.precision = precision
        self._ops = ops(self.backend, precision)

    def _product(self, a, b):
        return product(a, b, self.precision)

    # ------------------------------------------------------------------ parameters
    def _attention_sizes(self, sizes):
        if sizes.context_dim is None:
            raise ValueError(f"cell {self.name!r} reads a grid of image features; the model gives it no context")
        return AttentionSizes(sizes.context_dim, sizes.hidden_dim, self.attention_dim)

    def parameters(self, wordvec_dim, hidden_dim):
        raise TypeError(f"cell {self.name!r}'s parameters depend on the feature size: use parameters_for(sizes)")

    def parameters_for(self, sizes):
        D, H, G = sizes.context_dim, sizes.hidden_dim, self.inner.gates
        params = dict(self.inner.parameters(sizes.wordvec_dim, H))
        params.update(self.mechanism.parameters(self._attention_sizes(sizes)))
        params["att_Wz"] = ParamSpec((D, G * H), fan_in=D)
        for s in range(1, self.inner.states):
            params[f"att_W_init{s}"] = ParamSpec((D, H), fan_in=D)
            params[f"att_b_init{s}"] = ParamSpec((H,))
        return params

    def step_blocks(self, sizes):
        return self.inner.step_blocks(sizes)

    # ------------------------------------------------------------------ one step, shared by forward and step
    def _step(self, x_part, prev, V, keys, params):
        """x_part (N, G*H) = x_t Wx + b, prev the state tuple -> (next state, alpha (N, L), saved)."""
        h_prev = prev[0]
        g, alpha, attention_saved = self.mechanism.forward(h_prev, V, keys, params)
        a = x_part + self._product(g, params["att_Wz"])
        u = self._product(h_prev, params["Wh"])
        if self.inner.summed:
            state, pointwise_saved = self.inner.pointwise_forward(a + u, None, prev)
        else:
            state, pointwise_saved = self.inner.pointwise_forward(a, u, prev)
        return tuple(state), alpha, (h_prev, g, attention_saved, pointwise_saved)

    def _first_state(self, h0, V, params):
        """(the state before the first word, the caches of the further state arrays' projections)."""
        mean = V.mean(axis=1)
        projected = [self._ops.affine_forward(mean, params[f"att_W_init{s}"], params[f"att_b_init{s}"])
                     for s in range(1, self.inner.states)]
        return (h0,) + tuple(out for out, _ in projected), [cache for _, cache in projected]

    def _first_state_backward(self, dstate, caches, grads, dV):
        """Adds the gradient of the further state arrays' start (dstate[1:]) to grads, and to dV (N, L, D) unless
        it is None."""
        for s, cache in enumerate(caches, start=1):
            dmean, grads[f"att_W_init{s}"], grads[f"att_b_init{s}"] = self._ops.affine_backward(
                dstate[s], cache, input_grad=dV is not None)
            if dV is not None:
                dV += dmean[:, None, :] / dV.shape[1]

    def _engine_params(self, params, names):
        return {name: params[name] for name in names}

    # ------------------------------------------------------------------ training
    def forward(self, x, h0, params, context):
        """x (N, T, W), h0 (N, H), context V (N, L, D) -> h (N, T, H), cache (alphas in
        :meth:`attention_weights`)."""
        V = np.asarray(context)
        state, init_caches = self._first_state(h0, V, params)
        if self.backend == "cython":
            h, cache = self._engine.soft_attended_forward(
                x, state, V, self._engine_params(params, self._engine.SOFT_PARAMETERS), self.inner.pointwise,
                precision=self.precision)
            return h, (cache, init_caches, cache.alphas)
        keys, prepare_cache = self.mechanism.prepare(V, params)
        x_parts = self._product(x, params["Wx"]) + params["b"]
        N, T = x.shape[:2]
        h = np.empty((N, T, h0.shape[1]), dtype=np.result_type(x, h0))
        alphas = np.empty((N, T, V.shape[1]), dtype=h.dtype)
        steps = []
        for t in range(T):
            state, alphas[:, t], saved = self._step(x_parts[:, t], state, V, keys, params)
            h[:, t] = state[0]
            steps.append(saved)
        # params is the cell's own dict (the model passes only those), so backward's gradients are its keys.
        return h, (x, V, params, keys, prepare_cache, steps, init_caches, alphas)

    @staticmethod
    def attention_weights(cache):
        """alpha (N, T, L) of a forward pass, from its cache."""
        return cache[-1]

    def run_backward(self, dh, cache, dalphas=None, context_grad=True):
        """:meth:`Cell.run_backward` with ``dalphas`` (N, T, L), the gradient of a penalty on the weights (None:
        none) -> dx, dh0, dcontext (N, L, D), grads. ``context_grad`` False: the grid is data, whose gradient
        (dcontext None) the compiled path then skips computing."""
        dx, dh0, grads, dV = self.backward(dh, cache, dalphas, context_grad)
        return dx, dh0, dV, grads

    def backward(self, dh, cache, dalphas=None, context_grad=True):
        """Backward of :meth:`forward` -> dx (N, T, W), dh0 (N, H), grads, dcontext (N, L, D) (None without
        ``context_grad``)."""
        if self.backend == "cython":
            engine_cache, init_caches, _ = cache
            dx, dstate, dV, grads = self._engine.soft_attended_backward(dh, engine_cache, dalphas, context_grad,
                                                                        precision=self.precision)
            self._first_state_backward(dstate, init_caches, grads, dV)
            return dx, dstate[0], grads, dV
        x, V, params, keys, prepare_cache, steps, init_caches, alphas = cache
        if dalphas is None:
            dalphas = np.zeros_like(alphas)
        grads = {name: np.zeros_like(value) for name, value in params.items()}
        N, T = x.shape[:2]
        dx_parts = np.empty(x.shape[:2] + (params["Wx"].shape[1],), dtype=dh.dtype)
        dV, dkeys = np.zeros_like(V, dtype=dh.dtype), np.zeros(np.shape(keys), dtype=dh.dtype)
        dstate = [np.zeros_like(dh[:, 0])] + [np.zeros_like(dh[:, 0]) for _ in range(1, self.inner.states)]
        for t in reversed(range(T)):
            h_prev, g, attention_saved, pointwise_saved = steps[t]
            dnext = (dh[:, t] + dstate[0],) + tuple(dstate[1:])
            da, du, dprev = self.inner.pointwise_backward(dnext, pointwise_saved)
            du = da if self.inner.summed else du
            dx_parts[:, t] = da
            grads["Wh"] += self._product(h_prev.T, du)
            grads["att_Wz"] += self._product(g.T, da)
            dh_att, dV_t, dkeys_t, step_grads = self.mechanism.backward(self._product(da, params["att_Wz"].T),
                                                                        dalphas[:, t], attention_saved)
            for name, value in step_grads.items():
                grads[name] += value
            dV += dV_t
            dkeys += dkeys_t
            dstate = [self._product(du, params["Wh"].T) + dh_att] + [np.zeros_like(dh_att)
                                                                      for _ in range(1, self.inner.states)]
            for s, d in enumerate(dprev):
                if d is not None:
                    dstate[s] = dstate[s] + d
        self._first_state_backward(dstate, init_caches, grads, dV)
        dV_prepare, prepare_grads = self.mechanism.prepare_backward(dkeys, prepare_cache)
        dV += dV_prepare
        grads.update(prepare_grads)
        flat_x, flat_dparts = x.reshape(N * T, -1), dx_parts.reshape(N * T, -1)
        grads["Wx"] = self._product(flat_x.T, flat_dparts)
        grads["b"] = flat_dparts.sum(axis=0)
        dx = self._product(dx_parts, params["Wx"].T)
        return dx, dstate[0], grads, dV if context_grad else None

    # ------------------------------------------------------------------ decoding
    def decoding_inputs(self, h0, context, params):
        """(the state before the first word: the inner cell's, then zero weights (N, L); the context the steps
        read: V and the mechanism's keys, computed once)."""
        V = np.asarray(context)
        if self.backend == "cython":
            keys = self._engine.soft_attention_keys(V, params["att_Ua"], precision=self.precision)
        else:
            keys, _ = self.mechanism.prepare(V, params)
        state, _ = self._first_state(h0, V, params)
        return state + (np.zeros(V.shape[:2], dtype=h0.dtype),), (V, keys)

    def step(self, x, state, params, context, images):
        """x (M, W), state (the inner state then the weights), context (V, keys) of every image, images (M,) ->
        the next state, its last element this step's weights alpha (M, L)."""
        V, keys = context
        if self.backend == "cython":
            next_state, alpha = self._engine.soft_attended_step(
                x, tuple(state[:-1]), V, keys, images, self._engine_params(params, self._engine.SOFT_STEP_PARAMETERS),
                self.inner.pointwise, precision=self.precision)
            return next_state + (alpha,)
        x_part = self._product(x, params["Wx"]) + params["b"]
        next_state, alpha, _ = self._step(x_part, state[:-1], V[images], keys[images], params)
        return next_state + (alpha,)

    def greedy_decode(self, h0, params, W_embed, W_vocab, b_vocab, start, end, null, max_length, context=None):
        """:meth:`Cell.greedy_decode` reading the grid ``context`` (N, L, D), in one compiled loop on the engine
        -> (captions (N, max_length) int32, the weights (N, max_length, L) of the step that chose each word); None
        on the numpy reference, whose step loop the model runs."""
        if self.backend != "cython":
            return None
        state, (V, keys) = self.decoding_inputs(h0, context, params)
        return self._engine.soft_attended_greedy_decode(
            state[:-1], V, keys, W_embed, self._engine_params(params, self._engine.SOFT_STEP_PARAMETERS), W_vocab,
            b_vocab, start, end, null, max_length, self.inner.pointwise, precision=self.precision)
