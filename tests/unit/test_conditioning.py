"""The conditioning part: ImageProjection's parameters, forward and backward, against hand-written numpy."""
import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.backend import resolve_backend, runtime
from captionkit.conditioning import ImageProjection

BACKENDS = ["numpy", "auto"]


def projection(backend, D=5, H=3):
    return ImageProjection(D, H, runtime(resolve_backend(backend)).ops)


def test_parameters_are_declared_in_the_assignments_order_and_shapes():
    specs = projection("numpy").parameters()
    assert list(specs) == ["W_proj", "b_proj"]
    assert specs["W_proj"].shape == (5, 3) and specs["W_proj"].fan_in == 5
    assert specs["b_proj"].shape == (3,) and specs["b_proj"].fan_in is None


def test_initial_values_are_the_assignments_draws():
    params = projection("numpy").init_params(np.random.RandomState(4))
    rng = np.random.RandomState(4)
    assert np.array_equal(params["W_proj"], rng.standard_normal((5, 3)) / np.sqrt(5))
    assert np.array_equal(params["b_proj"], np.zeros(3))


def test_the_model_draws_w_proj_right_after_w_embed():
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "cat": 3}
    model = CaptioningRNN(vocab, input_dim=6, wordvec_dim=4, hidden_dim=5, dtype=np.float64, seed=9)
    rng = np.random.RandomState(9)
    rng.standard_normal((len(vocab), 4))  # W_embed comes first
    assert np.array_equal(model.params["W_proj"], rng.standard_normal((6, 5)) / np.sqrt(6))
    assert np.array_equal(model.params["b_proj"], np.zeros(5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_is_the_affine_map_with_no_context(backend):
    rng = np.random.RandomState(0)
    features, W, b = rng.randn(4, 5), rng.randn(5, 3), rng.randn(3)
    h0, context, _ = projection(backend).forward(features, {"W_proj": W, "b_proj": b})
    assert context is None
    np.testing.assert_allclose(h0, features @ W + b, rtol=1e-12)
    assert projection(backend).decoding_inputs(features, {"W_proj": W, "b_proj": b})[1] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_gives_the_affine_maps_gradients(backend):
    rng = np.random.RandomState(1)
    features, W, b, dh0 = rng.randn(4, 5), rng.randn(5, 3), rng.randn(3), rng.randn(4, 3)
    part = projection(backend)
    _, _, cache = part.forward(features, {"W_proj": W, "b_proj": b})
    grads = part.backward(dh0, None, cache)
    assert sorted(grads) == ["W_proj", "b_proj"]
    np.testing.assert_allclose(grads["W_proj"], features.T @ dh0, rtol=1e-12)
    np.testing.assert_allclose(grads["b_proj"], dh0.sum(axis=0), rtol=1e-12)


def test_backward_refuses_a_context_gradient():
    part = projection("numpy")
    _, _, cache = part.forward(np.ones((2, 5)), {"W_proj": np.ones((5, 3)), "b_proj": np.zeros(3)})
    with pytest.raises(ValueError, match="dcontext=None"):
        part.backward(np.ones((2, 3)), np.ones((2, 3)), cache)
