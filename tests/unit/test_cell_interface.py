"""The model's side of the Cell interface: sizes, the step's memory blocks, the context adaptation, and the fused
greedy loop against decoding's step loop."""
import dataclasses

import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.backend import compiled_available
from captionkit.cells import Cell, CellSizes, ParamSpec, get_cell
from captionkit.cells.base import shape_problem

VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(9)}}


class ContextRNN(Cell):
    """A test cell that reads a context: h_t = tanh(x_t Wx + h_{t-1} Wh + context[image] Wc), context (N, C)."""

    name = "context_rnn"
    reads_context = True

    def parameters(self, wordvec_dim, hidden_dim):
        raise AssertionError("a cell that overrides parameters_for is asked through it")

    def parameters_for(self, sizes):
        W, H, C = sizes.wordvec_dim, sizes.hidden_dim, sizes.context_dim
        return {"Wx": ParamSpec((W, H), fan_in=W), "Wh": ParamSpec((H, H), fan_in=H), "Wc": ParamSpec((C, H), C)}

    def forward(self, x, h0, params, context):
        h, prev = np.empty(x.shape[:2] + h0.shape[1:]), h0
        for t in range(x.shape[1]):
            prev = h[:, t] = self.step(x[:, t], (prev,), params, context, np.arange(x.shape[0]))[0]
        return h, (x, h0, h, params, context)

    def backward(self, dh, cache):
        x, h0, h, params, context = cache
        dx, dcontext = np.empty_like(x), np.zeros_like(context)
        grads = {name: np.zeros_like(value) for name, value in params.items()}
        dprev = np.zeros_like(h0)
        for t in reversed(range(x.shape[1])):
            prev = h[:, t - 1] if t else h0
            da = (dh[:, t] + dprev) * (1 - h[:, t] ** 2)
            dx[:, t] = da @ params["Wx"].T
            dprev = da @ params["Wh"].T
            dcontext += da @ params["Wc"].T
            grads["Wx"] += x[:, t].T @ da
            grads["Wh"] += prev.T @ da
            grads["Wc"] += context.T @ da
        return dx, dprev, grads, dcontext

    def step(self, x, state, params, context, images):
        return (np.tanh(x @ params["Wx"] + state[0] @ params["Wh"] + context[images] @ params["Wc"]),)


def test_cell_sizes_are_a_frozen_record_with_no_context_by_default():
    sizes = CellSizes(wordvec_dim=4, hidden_dim=5, input_dim=6)
    assert sizes.context_dim is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        sizes.hidden_dim = 7


def test_a_plain_cell_is_asked_for_its_parameters_of_w_and_h():
    cell = get_cell("mgu")()
    assert cell.parameters_for(CellSizes(4, 5, 6)) == cell.parameters(4, 5)
    a, b = cell.init_params_for(CellSizes(4, 5, 6), np.random.RandomState(3)), cell.init_params(4, 5,
                                                                                                np.random.RandomState(3))
    assert all(np.array_equal(a[k], b[k]) for k in b) and list(a) == list(b)


@pytest.mark.parametrize("cell_type, blocks", [("rnn", 2), ("lstm", 5), ("gru", 4), ("gru_numpy", 4), ("mgu", 3)])
def test_step_blocks_are_h_and_the_gates(cell_type, blocks):
    # mgu is not a GatedCell: its 2W*H + 2H*H + 2H parameter elements are those of two gate blocks.
    assert get_cell(cell_type)().step_blocks(CellSizes(4, 5, 6)) == blocks


@pytest.mark.parametrize("cell_type, blocks", [("rnn", 2), ("lstm", 5), ("mgu", 3)])
def test_the_step_estimate_counts_the_cells_blocks(cell_type, blocks):
    V, W, H, D, N, T = len(VOCAB), 4, 5, 6, 3, 7
    model = CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, seed=0)
    per_caption = (T - 1) * (6 * V + 6 * blocks * H + 3 * W) + 3 * D
    assert model.training_step_bytes(N, T) == N * per_caption * 4


def test_a_plain_cell_refuses_a_context_naming_itself():
    cell = get_cell("mgu")()
    params = cell.init_params(3, 4, np.random.RandomState(0))
    with pytest.raises(ValueError, match="cell 'mgu' does not read a per-step context"):
        cell.run_forward(np.zeros((2, 2, 3)), np.zeros((2, 4)), params, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="cell 'mgu' does not read a per-step context"):
        cell.run_step(np.zeros((2, 3)), (np.zeros((2, 4)),), params, np.zeros((2, 5)), np.arange(2))


def test_a_plain_cells_backward_gets_no_context_gradient():
    cell = get_cell("rnn")()
    rng = np.random.RandomState(1)
    params = cell.init_params(3, 4, rng)
    x, h0, dh = rng.randn(2, 2, 3), rng.randn(2, 4), rng.randn(2, 2, 4)
    h, cache = cell.run_forward(x, h0, params)
    dx, dh0, dcontext, grads = cell.run_backward(dh, cache)
    own_dx, own_dh0, own_grads = cell.backward(dh, cell.forward(x, h0, params)[1])
    assert dcontext is None and np.array_equal(dx, own_dx) and np.array_equal(dh0, own_dh0)
    assert all(np.array_equal(grads[k], own_grads[k]) for k in own_grads)


def test_a_cell_that_reads_a_context_gets_it_and_the_rows_images():
    cell, sizes = ContextRNN(), CellSizes(3, 4, 6, context_dim=2)
    rng = np.random.RandomState(2)
    params = cell.init_params_for(sizes, rng)
    assert sorted(params) == ["Wc", "Wh", "Wx"] and params["Wc"].shape == (2, 4)
    context = rng.randn(2, 2)
    x, h0, dh = rng.randn(2, 3, 3), rng.randn(2, 4), rng.randn(2, 3, 4)
    h, cache = cell.run_forward(x, h0, params, context)
    dx, dh0, dcontext, grads = cell.run_backward(dh, cache)
    # The context's gradient against centred differences of the loss sum(h * dh).
    numerical = np.zeros_like(context)
    for index in np.ndindex(context.shape):
        bumped = [context.copy(), context.copy()]
        bumped[0][index] += 1e-6
        bumped[1][index] -= 1e-6
        up, down = (np.sum(cell.run_forward(x, h0, params, c)[0] * dh) for c in bumped)
        numerical[index] = (up - down) / 2e-6
    np.testing.assert_allclose(dcontext, numerical, rtol=1e-6, atol=1e-9)
    # Three hypotheses of image 1 and one of image 0 read their image's row of the context, not a copy per row.
    state = cell.run_step(x[[1, 1, 0, 1], 0], (h0[[1, 1, 0, 1]],), params, context, np.array([1, 1, 0, 1]))
    np.testing.assert_allclose(state[0], h[[1, 1, 0, 1], 0], rtol=1e-12)


def test_the_registrys_tiny_run_gives_a_context_cell_its_context():
    assert shape_problem(ContextRNN) is None

    class WrongContextGradient(ContextRNN):
        def backward(self, dh, cache):
            dx, dh0, grads, dcontext = super().backward(dh, cache)
            return dx, dh0, grads, dcontext[:, :1]

    assert shape_problem(WrongContextGradient) == "backward's dcontext has shape (2, 1), expected (2, 3) " \
                                                  "(W=3, H=4, N=2, T=2, context (N, 3))"


@pytest.mark.skipif(not compiled_available(), reason="captionkit._ext is not built")
@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru", "gru_numpy"])
def test_the_fused_greedy_loop_equals_decodings_step_loop_exactly(cell_type, threads, monkeypatch):
    threads(2)
    model = CaptioningRNN(VOCAB, input_dim=7, wordvec_dim=6, hidden_dim=9, cell_type=cell_type, backend="cython",
                          dtype=np.float64, seed=4)
    model.params = {name: value * 4 for name, value in model.params.items()}  # so that captions vary
    features = np.random.default_rng(5).standard_normal((13, 7)) * 2
    fused = model.sample(features, max_length=10)
    assert model.fused_greedy(features, 10) is not None
    monkeypatch.setattr(model, "fused_greedy", lambda features, max_length: None)
    stepped = model.sample(features, max_length=10)
    np.testing.assert_array_equal(fused, stepped)
    assert len({tuple(row) for row in stepped}) > 1
