"""Soft attention (captionkit.attention) and AttendedCell, held to numerical gradients in float64.

Every gradient is checked against a centred finite difference of a scalar loss ``sum(out * dout)`` with random
``dout``, on every parameter and input, for the mechanism alone and for whole sequences of rnn, lstm and gru cells
with attention; and decoding's step is checked to be the same arithmetic as the training forward.
"""
import numpy as np
import pytest

from captionkit.attention import (AttentionSizes, SoftAttention, available_attention, get_attention,
                                  shape_problem)
from captionkit.attention.cell import AttendedCell
from captionkit.cells import CellSizes, available_cells, get_cell
from captionkit.gradient_check import eval_numerical_gradient_array

N, L, D, H, A, W, T = 3, 4, 5, 6, 7, 3, 4


def assert_gradient(analytic, scalar, value, what):
    """``analytic`` equals the centred difference of ``scalar()`` in ``value`` to 1e-8 of the gradient's largest
    element (an element-wise relative error would judge the difference's own rounding, ~1e-11, on tiny elements)."""
    numeric = eval_numerical_gradient_array(lambda _: scalar(), value, np.ones(()))
    scale = max(np.abs(numeric).max(), 1e-3)
    assert np.abs(analytic - numeric).max() <= 1e-8 * scale, what


def test_registry_has_soft_and_checks_it():
    assert "soft" in available_attention()
    assert get_attention("soft") is SoftAttention
    assert shape_problem(SoftAttention) is None


def test_soft_attention_step_gradients():
    rng = np.random.RandomState(1)
    mechanism = SoftAttention()
    params = {k: s.initial_value(rng) * 3 for k, s in mechanism.parameters(AttentionSizes(D, H, A)).items()}
    params["att_ba"] = rng.standard_normal(A)
    params["att_bbeta"] = rng.standard_normal(D)
    V, h = rng.standard_normal((N, L, D)), rng.standard_normal((N, H))
    dg, dalpha = rng.standard_normal((N, D)), rng.standard_normal((N, L))

    def scalar():
        keys, _ = mechanism.prepare(V, params)
        g, alpha, _ = mechanism.forward(h, V, keys, params)
        return np.sum(g * dg) + np.sum(alpha * dalpha)

    keys, prepare_cache = mechanism.prepare(V, params)
    g, alpha, saved = mechanism.forward(h, V, keys, params)
    assert np.allclose(alpha.sum(axis=1), 1.0) and (alpha > 0).all()
    dh, dV, dkeys, grads = mechanism.backward(dg, dalpha, saved)
    dV_prepare, prepare_grads = mechanism.prepare_backward(dkeys, prepare_cache)
    grads.update(prepare_grads)
    assert_gradient(dh, scalar, h, "h")
    assert_gradient(dV + dV_prepare, scalar, V, "V")
    for name, value in params.items():
        assert_gradient(grads[name], scalar, value, name)


@pytest.fixture(params=["rnn", "lstm", "gru"])
def attended(request):
    if request.param not in available_cells():
        pytest.skip(f"cell {request.param!r} is not installed")
    return AttendedCell(get_cell(request.param)(backend="numpy"), SoftAttention(), A)


def _cell_inputs(cell, seed):
    rng = np.random.RandomState(seed)
    params = cell.init_params_for(CellSizes(W, H, D, D), rng)
    params = {name: value + 0.1 * rng.standard_normal(value.shape) for name, value in params.items()}
    x, h0, V = rng.standard_normal((N, T, W)), rng.standard_normal((N, H)), rng.standard_normal((N, L, D))
    return rng, params, x, h0, V


def test_attended_cell_sequence_gradients(attended):
    rng, params, x, h0, V = _cell_inputs(attended, 2)
    dout, dalphas = rng.standard_normal((N, T, H)), rng.standard_normal((N, T, L))

    def scalar():
        h, cache = attended.run_forward(x, h0, params, V)
        return np.sum(h * dout) + np.sum(attended.attention_weights(cache) * dalphas)

    h, cache = attended.run_forward(x, h0, params, V)
    dx, dh0, dV, grads = attended.run_backward(dout, cache, dalphas)
    assert set(grads) == set(params) == set(attended.parameters_for(CellSizes(W, H, D, D)))
    for what, value, analytic in [("x", x, dx), ("h0", h0, dh0), ("V", V, dV),
                                  *[(name, params[name], grads[name]) for name in params]]:
        assert_gradient(analytic, scalar, value, what)


def test_decoding_steps_repeat_the_training_forward(attended):
    """Feeding the training inputs step by step through decoding's step gives the forward's h and weights."""
    _, params, x, h0, V = _cell_inputs(attended, 3)
    h, cache = attended.run_forward(x, h0, params, V)
    images = np.array([2, 0, 1])  # rows stepped in another order than the images: the context is indexed
    state, context = attended.decoding_inputs(h0, V, params)
    state = tuple(s[images] for s in state)
    for t in range(T):
        state = attended.run_step(x[images, t], state, params, context, images)
        np.testing.assert_allclose(state[0], h[images, t], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state[-1], attended.attention_weights(cache)[images, t], rtol=1e-12, atol=1e-12)


def test_attention_wraps_only_gated_cells():
    class NotGated:
        name = "plain"

    with pytest.raises(ValueError, match="gated cells"):
        AttendedCell(NotGated(), SoftAttention(), A)
