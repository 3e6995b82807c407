"""The ``precision`` keyword of the numpy reference layers (captionkit/layers.py) and the runtime that binds it
(captionkit/backend.py).

precision="bf16" is checked against the same computation composed here from
:func:`captionkit.precision.bf16_matmul_reference` (each product's inputs rounded to bfloat16, float32 sums), and
each check is made discriminating: the float32 result differs from the bf16 one far more than the tolerance.
precision="fp32" is checked bit for bit against a copy of the float32 math as it was before precision existed.
"""
import functools

import numpy as np
import pytest

from captionkit import backend, layers
from captionkit.cells import GatedCell, available_cells, get_cell
from captionkit.precision import bf16_matmul_reference

N, T, W, H, V = 3, 4, 5, 6, 7


def _rng():
    return np.random.RandomState(25)


def _f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def bf16_product(a, b):
    """The reference product on arrays with leading batch axes (numpy's ``@`` broadcasting over them)."""
    return bf16_matmul_reference(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], -1)


def fp32_product(a, b):
    return a @ b


def _close(actual, expected):
    """Norm-wise relative error of actual against expected."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


# Both sides multiply the same bf16 inputs (exact in float32) and may sum in another float32 order only: a few
# float32 roundings, ~1e-7 relative, far below bf16's 2**-8 = 4e-3 rounding of the inputs.
SAME = 1e-6
DIFFERENT = 1e-4  # fp32 against bf16: at least this far apart on these inputs


def _assert_bf16(bf16, fp32, expected):
    assert _close(bf16, expected) < SAME
    assert _close(fp32, expected) > DIFFERENT  # the check above could fail: fp32 does not pass it


# ------------------------------------------------------------------------------------------- the affine layer
def test_affine_forward_and_backward_bf16_are_the_reference_products():
    rng = _rng()
    x, w, b, dout = _f32(rng, N, 2, 3), _f32(rng, 6, V), _f32(rng, V), _f32(rng, N, V)
    out, cache = layers.affine_forward(x, w, b, precision="bf16")
    out32, cache32 = layers.affine_forward(x, w, b)
    _assert_bf16(out, out32, bf16_matmul_reference(x.reshape(N, 6), w) + b)
    dx, dw, db = layers.affine_backward(dout, cache, precision="bf16")
    dx32, dw32, _ = layers.affine_backward(dout, cache32)
    _assert_bf16(dx, dx32, bf16_matmul_reference(dout, np.ascontiguousarray(w.T)).reshape(x.shape))
    _assert_bf16(dw, dw32, bf16_matmul_reference(np.ascontiguousarray(x.reshape(N, 6).T), dout))
    np.testing.assert_array_equal(db, dout.sum(axis=0))  # the bias's gradient has no product: float32 as always
    assert out.dtype == dx.dtype == dw.dtype == np.float32


def test_affine_fp32_is_bit_for_bit_the_float32_math():
    rng = _rng()
    x, w, b, dout = _f32(rng, N, 2, 3), _f32(rng, 6, V), _f32(rng, V), _f32(rng, N, V)
    out, cache = layers.affine_forward(x, w, b, precision="fp32")
    np.testing.assert_array_equal(out, x.reshape(N, -1) @ w + b)
    dx, dw, db = layers.affine_backward(dout, cache, precision="fp32")
    np.testing.assert_array_equal(dx, (dout @ w.T).reshape(x.shape))
    np.testing.assert_array_equal(dw, x.reshape(N, -1).T @ dout)
    np.testing.assert_array_equal(db, dout.sum(axis=0))


# ------------------------------------------------------------------------------------------- the output layer
def _output_inputs():
    rng = _rng()
    h, w, b = _f32(rng, N, T, H), _f32(rng, H, V), _f32(rng, V)
    y = rng.randint(0, V, size=(N, T))
    mask = rng.rand(N, T) > 0.2
    return h, w, b, y, mask


def _softmax_loss_of(scores, h, w, y, mask, product):
    """The fused loss composed of its parts: the softmax loss of ``scores`` and the affine backward's products."""
    loss, dscores = layers.temporal_softmax_loss(scores, y, mask)
    flat = dscores.reshape(N * T, V)
    dh = product(flat, np.ascontiguousarray(w.T)).reshape(N, T, H)
    dw = product(np.ascontiguousarray(h.reshape(N * T, H).T), flat)
    return loss, dh, dw, flat.sum(axis=0)


def test_temporal_softmax_affine_loss_bf16_rounds_the_products_only():
    h, w, b, y, mask = _output_inputs()
    scores = bf16_product(h, w) + b
    expected = _softmax_loss_of(scores, h, w, y, mask, bf16_matmul_reference)
    bf16 = layers.temporal_softmax_affine_loss(h, w, b, y, mask, precision="bf16")
    fp32 = layers.temporal_softmax_affine_loss(h, w, b, y, mask)
    for got, got32, want in zip(bf16, fp32, expected):
        _assert_bf16(got, got32, want)
    scores32 = (h.reshape(N * T, H) @ w).reshape(N, T, V) + b
    for got, want in zip(fp32, _softmax_loss_of(scores32, h, w, y, mask, fp32_product)):
        np.testing.assert_array_equal(got, want)


def test_temporal_softmax_affine_nll_bf16():
    h, w, b, y, mask = _output_inputs()

    def nll_of(scores):
        log_probs = scores - np.log(np.exp(scores.astype(np.float64)).sum(axis=2, keepdims=True))
        return -np.sum(np.take_along_axis(log_probs, y[:, :, None], axis=2)[:, :, 0] * mask, axis=1)

    _assert_bf16(layers.temporal_softmax_affine_nll(h, w, b, y, mask, precision="bf16"),
                 layers.temporal_softmax_affine_nll(h, w, b, y, mask), nll_of(bf16_product(h, w) + b))


def test_decoding_heads_bf16_score_with_the_reference_product():
    rng = _rng()
    # Scores far apart relative to bf16's rounding, so that the best words are the rounded product's for sure.
    h, w, b = _f32(rng, 8, H), _f32(rng, H, V, scale=10.0), np.arange(V, dtype=np.float32)
    scores = bf16_matmul_reference(h, w) + b
    np.testing.assert_array_equal(layers.affine_argmax(h, w, b, precision="bf16"), scores.argmax(axis=1))
    log_probs, ids = layers.affine_log_softmax_topk(h, w, b, 3, precision="bf16")
    log_probs32, _ = layers.affine_log_softmax_topk(h, w, b, 3)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(ids, order)
    exact = scores - np.log(np.exp(scores.astype(np.float64)).sum(axis=1, keepdims=True))
    _assert_bf16(log_probs, log_probs32, np.take_along_axis(exact, order, axis=1))
    uniforms = rng.rand(8)
    drawn, drawn_log_probs = layers.affine_sample(h, w, b, uniforms, 2.0, precision="bf16")
    tempered = scores.astype(np.float64) / 2.0
    tempered_log_probs = tempered - np.log(np.exp(tempered).sum(axis=1, keepdims=True))
    cumulative = np.cumsum(np.exp(tempered_log_probs), axis=1)
    np.testing.assert_array_equal(drawn, (cumulative <= uniforms[:, None]).sum(axis=1))
    np.testing.assert_allclose(drawn_log_probs, tempered_log_probs[np.arange(8), drawn], rtol=SAME)


def test_decoding_heads_fp32_unchanged():
    rng = _rng()
    h, w, b = _f32(rng, 8, H), _f32(rng, H, V), _f32(rng, V)
    np.testing.assert_array_equal(layers.affine_argmax(h, w, b, precision="fp32"), (h @ w + b).argmax(axis=1))
    log_probs, ids = layers.affine_log_softmax_topk(h, w, b, 2, precision="fp32")
    np.testing.assert_array_equal(ids, np.argsort(-(h @ w + b), axis=1, kind="stable")[:, :2])
    np.testing.assert_array_equal((log_probs, ids), layers.affine_log_softmax_topk(h, w, b, 2))


# ------------------------------------------------------------------------------------------- the gated engine
def _gated_cells():
    return [name for name in available_cells() if issubclass(get_cell(name), GatedCell)]


def _forward_of(x, h0, Wx, Wh, b, pointwise, product):
    """The engine's recurrence written out step by step with ``product`` for each of its products."""
    x_Wx, state, hs, prev_hs, saved = product(x, Wx), pointwise.initial_state(h0), [], [], []
    for t in range(x.shape[1]):
        prev_hs.append(state[0])
        u = product(state[0], Wh)
        a, u = (x_Wx[:, t] + u + b, None) if pointwise.summed else (x_Wx[:, t] + b, u)
        state, step_saved = pointwise.run_forward(a, u, state)
        hs.append(state[0])
        saved.append(step_saved)
    return np.stack(hs, axis=1), np.stack(prev_hs, axis=1), saved


def _backward_of(dh, x, prev_h, Wx, Wh, saved, pointwise, product):
    das, dus, dnext = [], [], [np.zeros((N, H), np.float32) for _ in range(pointwise.states)]
    for t in reversed(range(x.shape[1])):
        dnext[0] = dnext[0] + dh[:, t]
        da, du, dprev = pointwise.run_backward(tuple(dnext), saved[t])
        du = da if pointwise.summed else du
        das.insert(0, da)
        dus.insert(0, du)
        dnext = [np.zeros((N, H), np.float32) if d is None else d for d in dprev]
        dnext[0] = dnext[0] + product(du, Wh.T)
    rows = N * x.shape[1]  # (n, t) rows, n major, for the products over the whole sequence
    da, du = np.stack(das, axis=1).reshape(rows, -1), np.stack(dus, axis=1).reshape(rows, -1)
    return (product(da, Wx.T).reshape(x.shape), dnext[0], product(x.reshape(rows, -1).T, da),
            product(prev_h.reshape(rows, -1).T, du), da.sum(axis=0))


def _gated_inputs(cell):
    rng = _rng()
    G = cell.gates
    return (_f32(rng, N, T, W), _f32(rng, N, H), _f32(rng, W, G * H, scale=0.5), _f32(rng, H, G * H, scale=0.5),
            _f32(rng, G * H, scale=0.1), _f32(rng, N, T, H))


def _recurrence(cell_type, product):
    """(the engine's arguments x, h0, Wx, Wh, b, pointwise; dh; and the reference recurrence's h and gradients
    with ``product``) for a cell of the registry."""
    cell = get_cell(cell_type)(backend="numpy")
    x, h0, Wx, Wh, b, dh = _gated_inputs(cell)
    h_ref, prev_ref, saved_ref = _forward_of(x, h0, Wx, Wh, b, cell.pointwise, product)
    grads_ref = _backward_of(dh, x, prev_ref, Wx, Wh, saved_ref, cell.pointwise, product)
    return (x, h0, Wx, Wh, b, cell.pointwise), dh, h_ref, grads_ref


def _first_step(args, precision):
    x, h0, Wx, Wh, b, pointwise = args
    return layers.gated_step(x[:, 0], pointwise.initial_state(h0), Wx, Wh, b, pointwise, precision=precision)[0]


@pytest.mark.parametrize("cell_type", _gated_cells())
def test_gated_forward_backward_step_bf16_match_the_reference_recurrence(cell_type):
    args, dh, h_ref, grads_ref = _recurrence(cell_type, bf16_product)
    h, cache = layers.gated_forward(*args, precision="bf16")
    h32, cache32 = layers.gated_forward(*args)
    _assert_bf16(h, h32, h_ref)
    grads = layers.gated_backward(dh, cache, precision="bf16")
    grads32 = layers.gated_backward(dh, cache32)
    for name, got, got32, want in zip(("dx", "dh0", "dWx", "dWh", "db"), grads, grads32, grads_ref):
        assert _close(got, want) < SAME, name
        assert _close(got32, want) > DIFFERENT, name
    _assert_bf16(_first_step(args, "bf16"), _first_step(args, "fp32"), h_ref[:, 0])


@pytest.mark.parametrize("cell_type", _gated_cells())
def test_gated_fp32_is_bit_for_bit_the_float32_recurrence(cell_type):
    args, dh, h_ref, ref = _recurrence(cell_type, fp32_product)
    h, cache = layers.gated_forward(*args, precision="fp32")
    np.testing.assert_array_equal(h, h_ref)
    dx, dh0, dWx, dWh, db = layers.gated_backward(dh, cache, precision="fp32")
    for name, got, want in zip(("dx", "dh0", "dWx", "dWh", "db"), (dx, dh0, dWx, dWh, db), ref):
        np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_array_equal(_first_step(args, "fp32"), h_ref[:, 0])


# ------------------------------------------------------------------------------------------- bad precisions
def test_bf16_refuses_float64_and_unknown_precisions():
    rng = _rng()
    x, w, b = rng.standard_normal((N, 4)), rng.standard_normal((4, V)), np.zeros(V)
    with pytest.raises(ValueError, match="precision='bf16'.*float32.*float64"):
        layers.affine_forward(x, w, b, precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        layers.affine_argmax(x.astype(np.float32), w.astype(np.float32), b, precision="fp16")


# ------------------------------------------------------------------------------------------- the runtime
def test_runtime_binds_bf16_into_the_product_functions_only():
    fp32 = backend.runtime("numpy", "fp32")
    assert fp32 is backend.runtime("numpy") and fp32.ops is layers and fp32.precision == "fp32"
    bf16 = backend.runtime("numpy", "bf16")
    assert bf16 is backend.runtime("numpy", "bf16") and bf16.precision == "bf16"
    for name in layers.__all__:
        function = getattr(bf16.ops, name)
        if name in backend.PRECISION_FUNCTIONS:
            assert isinstance(function, functools.partial) and function.func is getattr(layers, name)
            assert function.keywords == {"precision": "bf16"}
        else:
            assert function is getattr(layers, name)
    rng = _rng()
    x, w, b = _f32(rng, N, W), _f32(rng, W, V), _f32(rng, V)
    np.testing.assert_array_equal(bf16.ops.affine_forward(x, w, b)[0], bf16_matmul_reference(x, w) + b)
    with pytest.raises(ValueError, match="precision must be one of"):
        backend.runtime("numpy", "fp8")


def test_compiled_bf16_runtime_needs_avx512_bf16(monkeypatch):
    kernels = pytest.importorskip("captionkit.kernels")
    if not kernels.is_available():
        pytest.skip("the compiled kernels are not built")
    monkeypatch.setattr(kernels, "bf16_available", lambda: False)
    with pytest.raises(RuntimeError, match="AVX512-BF16.*--backend numpy"):
        backend.runtime("cython", "bf16")
    assert backend.runtime("cython", "fp32").ops is kernels  # fp32 never asks
