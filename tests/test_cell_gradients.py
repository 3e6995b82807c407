"""Gradient checks for every registered cell, installed plugins included (parametrised over the registry)."""
import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.cells import available_cells, get_cell
from captionkit.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error

CELLS = available_cells()
BACKENDS = ["numpy", "auto"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", CELLS)
def test_sequence_backward_matches_numerical_gradient(cell_type, backend):
    from captionkit.backend import resolve_backend

    cell = get_cell(cell_type)(backend=resolve_backend(backend))
    rng = np.random.RandomState(231)
    N, T, W, H = 2, 4, 3, 5
    params = {name: rng.randn(*spec.shape) for name, spec in cell.parameters(W, H).items()}
    x, h0 = rng.randn(N, T, W), rng.randn(N, H)
    h, cache = cell.forward(x, h0, params)
    assert h.shape == (N, T, H)
    dh = rng.randn(*h.shape)
    dx, dh0, grads = cell.backward(dh, cache)
    f = lambda _: cell.forward(x, h0, params)[0]  # noqa: E731
    assert rel_error(eval_numerical_gradient_array(f, x, dh), dx) < 1e-6
    assert rel_error(eval_numerical_gradient_array(f, h0, dh), dh0) < 1e-6
    assert sorted(grads) == sorted(params)
    for name, value in params.items():
        assert rel_error(eval_numerical_gradient_array(f, value, dh), grads[name]) < 1e-6, name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", CELLS)
def test_model_loss_gradients_match_numerical(cell_type, backend):
    rng = np.random.RandomState(231)
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "cat": 3, "dog": 4}
    model = CaptioningRNN(vocab, input_dim=4, wordvec_dim=5, hidden_dim=6, cell_type=cell_type, dtype=np.float64,
                          backend=backend, seed=0)
    captions = rng.randint(len(vocab), size=(3, 5))
    features = rng.randn(3, 4)
    _, grads = model.loss(features, captions)
    for name in sorted(grads):
        f = lambda _: model.loss(features, captions)[0]  # noqa: E731
        numerical = eval_numerical_gradient(f, model.params[name], verbose=False, h=1e-6)
        assert rel_error(numerical, grads[name]) < 1e-5, name


@pytest.mark.parametrize("cell_type", CELLS)
def test_step_agrees_with_sequence_forward(cell_type):
    cell = get_cell(cell_type)(backend="numpy")
    rng = np.random.RandomState(0)
    N, T, W, H = 3, 4, 2, 5
    params = cell.init_params(W, H, rng)
    x, h0 = rng.randn(N, T, W), rng.randn(N, H)
    h, _ = cell.forward(x, h0, params)
    state = cell.initial_state(h0)
    for t in range(T):
        state = cell.step(x[:, t], state, params)
        np.testing.assert_allclose(state[0], h[:, t], rtol=1e-12, atol=1e-14)
