"""The seed notebook's numeric checks of the reference layers, with its own inputs and bounds."""
import numpy as np
import pytest

from captionkit.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from captionkit.layers import (
    affine_backward,
    affine_forward,
    rnn_backward,
    rnn_forward,
    rnn_step_backward,
    rnn_step_forward,
    sigmoid,
    temporal_affine_backward,
    temporal_affine_forward,
    temporal_softmax_loss,
    word_embedding_backward,
    word_embedding_forward,
)


def test_rnn_step_forward_matches_seed():
    N, D, H = 3, 10, 4
    x = np.linspace(-0.4, 0.7, num=N * D).reshape(N, D)
    prev_h = np.linspace(-0.2, 0.5, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.1, 0.9, num=D * H).reshape(D, H)
    Wh = np.linspace(-0.3, 0.7, num=H * H).reshape(H, H)
    b = np.linspace(-0.2, 0.4, num=H)
    next_h, _ = rnn_step_forward(x, prev_h, Wx, Wh, b)
    expected = np.asarray([
        [-0.58172089, -0.50182032, -0.41232771, -0.31410098],
        [0.66854692, 0.79562378, 0.87755553, 0.92795967],
        [0.97934501, 0.99144213, 0.99646691, 0.99854353]])
    assert rel_error(expected, next_h) < 1e-8


def test_rnn_step_backward_matches_numerical_gradient():
    np.random.seed(231)
    N, D, H = 4, 5, 6
    x, h = np.random.randn(N, D), np.random.randn(N, H)
    Wx, Wh, b = np.random.randn(D, H), np.random.randn(H, H), np.random.randn(H)
    out, cache = rnn_step_forward(x, h, Wx, Wh, b)
    dnext_h = np.random.randn(*out.shape)
    f = lambda _: rnn_step_forward(x, h, Wx, Wh, b)[0]  # noqa: E731  (the notebook's idiom: in-place perturbation)
    numerical = [eval_numerical_gradient_array(f, arr, dnext_h) for arr in (x, h, Wx, Wh, b)]
    analytic = rnn_step_backward(dnext_h, cache)
    for name, num, ana in zip(("dx", "dprev_h", "dWx", "dWh", "db"), numerical, analytic):
        assert rel_error(num, ana) < 1e-8, name


def test_rnn_forward_matches_seed():
    N, T, D, H = 2, 3, 4, 5
    x = np.linspace(-0.1, 0.3, num=N * T * D).reshape(N, T, D)
    h0 = np.linspace(-0.3, 0.1, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.2, 0.4, num=D * H).reshape(D, H)
    Wh = np.linspace(-0.4, 0.1, num=H * H).reshape(H, H)
    b = np.linspace(-0.7, 0.1, num=H)
    h, _ = rnn_forward(x, h0, Wx, Wh, b)
    expected = np.asarray([
        [[-0.42070749, -0.27279261, -0.11074945, 0.05740409, 0.22236251],
         [-0.39525808, -0.22554661, -0.0409454, 0.14649412, 0.32397316],
         [-0.42305111, -0.24223728, -0.04287027, 0.15997045, 0.35014525]],
        [[-0.55857474, -0.39065825, -0.19198182, 0.02378408, 0.23735671],
         [-0.27150199, -0.07088804, 0.13562939, 0.33099728, 0.50158768],
         [-0.51014825, -0.30524429, -0.06755202, 0.17806392, 0.40333043]]])
    assert rel_error(expected, h) < 1e-7


def test_rnn_backward_matches_numerical_gradient():
    np.random.seed(231)
    N, D, T, H = 2, 3, 10, 5
    x, h0 = np.random.randn(N, T, D), np.random.randn(N, H)
    Wx, Wh, b = np.random.randn(D, H), np.random.randn(H, H), np.random.randn(H)
    out, cache = rnn_forward(x, h0, Wx, Wh, b)
    dout = np.random.randn(*out.shape)
    analytic = rnn_backward(dout, cache)
    f = lambda _: rnn_forward(x, h0, Wx, Wh, b)[0]  # noqa: E731
    numerical = [eval_numerical_gradient_array(f, arr, dout) for arr in (x, h0, Wx, Wh, b)]
    for name, num, ana in zip(("dx", "dh0", "dWx", "dWh", "db"), numerical, analytic):
        assert rel_error(num, ana) < 1e-6, name


def test_word_embedding_forward_matches_seed():
    N, T, V, D = 2, 4, 5, 3
    x = np.asarray([[0, 3, 1, 2], [2, 1, 0, 3]])
    W = np.linspace(0, 1, num=V * D).reshape(V, D)
    out, _ = word_embedding_forward(x, W)
    expected = np.asarray([
        [[0., 0.07142857, 0.14285714], [0.64285714, 0.71428571, 0.78571429],
         [0.21428571, 0.28571429, 0.35714286], [0.42857143, 0.5, 0.57142857]],
        [[0.42857143, 0.5, 0.57142857], [0.21428571, 0.28571429, 0.35714286],
         [0., 0.07142857, 0.14285714], [0.64285714, 0.71428571, 0.78571429]]])
    assert rel_error(expected, out) < 1e-7


def test_word_embedding_backward_matches_numerical_gradient():
    np.random.seed(231)
    N, T, V, D = 50, 3, 5, 6
    x = np.random.randint(V, size=(N, T))
    W = np.random.randn(V, D)
    out, cache = word_embedding_forward(x, W)
    dout = np.random.randn(*out.shape)
    dW = word_embedding_backward(dout, cache)
    dW_num = eval_numerical_gradient_array(lambda W: word_embedding_forward(x, W)[0], W, dout)
    assert rel_error(dW, dW_num) < 1e-10


def test_temporal_affine_matches_numerical_gradient():
    np.random.seed(231)
    N, T, D, M = 2, 3, 4, 5
    x, w, b = np.random.randn(N, T, D), np.random.randn(D, M), np.random.randn(M)
    out, cache = temporal_affine_forward(x, w, b)
    dout = np.random.randn(*out.shape)
    f = lambda _: temporal_affine_forward(x, w, b)[0]  # noqa: E731
    numerical = [eval_numerical_gradient_array(f, arr, dout) for arr in (x, w, b)]
    for name, num, ana in zip(("dx", "dw", "db"), numerical, temporal_affine_backward(dout, cache)):
        assert rel_error(num, ana) < 1e-8, name


@pytest.mark.parametrize(
    "N, T, V, p, low, high",
    [(100, 1, 10, 1.0, 2.2, 2.4), (100, 10, 10, 1.0, 22.5, 23.5), (5000, 10, 10, 0.1, 2.2, 2.4)],
)
def test_temporal_softmax_loss_sanity(N, T, V, p, low, high):
    # Near-uniform scores: each unmasked position costs about log(V) = 2.303, summed over T and averaged over N.
    rng = np.random.RandomState(0)
    x = 0.001 * rng.randn(N, T, V)
    y = rng.randint(V, size=(N, T))
    mask = rng.rand(N, T) <= p
    loss, _ = temporal_softmax_loss(x, y, mask)
    assert low < loss < high


def test_temporal_softmax_loss_gradient():
    rng = np.random.RandomState(231)
    N, T, V = 7, 8, 9
    x = rng.randn(N, T, V)
    y = rng.randint(V, size=(N, T))
    mask = rng.rand(N, T) > 0.5
    loss, dx = temporal_softmax_loss(x, y, mask, verbose=False)
    dx_num = eval_numerical_gradient(lambda x: temporal_softmax_loss(x, y, mask)[0], x, verbose=False)
    assert rel_error(dx, dx_num) < 1e-6  # the notebook: "on the order of e-7 or less"


def test_temporal_softmax_loss_is_masked_sum_over_n():
    # Independent oracle: a direct per-position cross-entropy, summed where mask is true, divided by N.
    rng = np.random.RandomState(1)
    N, T, V = 4, 5, 6
    x, y, mask = rng.randn(N, T, V), rng.randint(V, size=(N, T)), rng.rand(N, T) > 0.3
    expected = sum(
        -np.log(np.exp(x[n, t, y[n, t]]) / np.exp(x[n, t]).sum())
        for n in range(N) for t in range(T) if mask[n, t]
    ) / N
    assert np.isclose(temporal_softmax_loss(x, y, mask)[0], expected, rtol=1e-12)


def test_temporal_softmax_loss_survives_huge_scores():
    x = np.array([[[1000.0, -1000.0, 0.0]]])
    loss, dx = temporal_softmax_loss(x, np.array([[1]]), np.array([[True]]))
    assert np.isclose(loss, 2000.0) and np.all(np.isfinite(dx))


def test_affine_matches_numerical_gradient():
    rng = np.random.RandomState(0)
    x, w, b = rng.randn(3, 2, 4), rng.randn(8, 5), rng.randn(5)
    out, cache = affine_forward(x, w, b)
    assert out.shape == (3, 5)
    dout = rng.randn(3, 5)
    f = lambda _: affine_forward(x, w, b)[0]  # noqa: E731
    for num, ana in zip((eval_numerical_gradient_array(f, a, dout) for a in (x, w, b)), affine_backward(dout, cache)):
        assert rel_error(num, ana) < 1e-8


def test_sigmoid_is_stable_and_correct():
    x = np.array([-800.0, -3.0, 0.0, 2.5, 800.0])
    with np.errstate(over="raise"):
        s = sigmoid(x)
    np.testing.assert_allclose(s[1:4], 1 / (1 + np.exp(-x[1:4])), rtol=1e-15)
    assert s[0] == 0.0 and s[-1] == 1.0


def test_numerical_gradient_restores_input():
    x = np.random.RandomState(0).randn(3, 4)
    before = x.copy()
    eval_numerical_gradient(lambda a: np.sum(a**2), x, verbose=False)
    eval_numerical_gradient_array(lambda a: a * 2, x, np.ones_like(x))
    np.testing.assert_array_equal(x, before)
