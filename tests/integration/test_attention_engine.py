"""Soft attention on the compiled engine against the numpy reference (captionkit.attention's AttendedCell with
SoftAttention on the numpy backend, itself held to numerical gradients and PyTorch autograd elsewhere): sequence
forward and backward (with a penalty's gradient of the weights), single steps of rows reading any image, fused
greedy decoding with its weights, and beam search, for rnn, lstm, gru and the test-only third-party gru_numpy, on
both kinds of pointwise part and both product paths. float64 agrees to 1e-10, float32 to 1e-4 (relative to each
array's largest value); greedy and beam captions are equal. Then the kernels' argument checks.
"""
import dataclasses

import numpy as np
import pytest

from captionkit import CaptioningRNN, kernels, parallel
from captionkit.attention import AttendedCell, SoftAttention
from captionkit.cells import get_cell
from captionkit.cells.base import CellSizes
from captionkit.decoding import decode, greedy_attention

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")

TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
PATHS = [("rnn", "compiled"), ("rnn", "numpy"), ("lstm", "compiled"), ("lstm", "numpy"), ("gru", "compiled"),
         ("gru", "numpy"), ("gru_numpy", "numpy")]
VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i for i in range(3, 40)}}


def scale_error(got, want):
    return float(np.max(np.abs(got.astype(np.float64) - want)) / max(np.max(np.abs(want)), 1e-300))


def cells(cell_type, kind, A):
    """(the attended cell on the engine, its pointwise part compiled or numpy; the numpy reference)."""
    inner = get_cell(cell_type)(backend="cython")
    if kind == "numpy":
        inner.pointwise = dataclasses.replace(inner.pointwise, capsules=None)
    engine = AttendedCell(inner, SoftAttention(), A, backend="cython")
    assert engine.compiled and engine.backend == "cython"
    return engine, AttendedCell(get_cell(cell_type)(backend="numpy"), SoftAttention(), A, backend="numpy")


def inputs(rng, reference, N, T, W, H, L, D, dtype):
    params = reference.init_params_for(CellSizes(W, H, D, D), rng)
    params = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}
    arrays = [rng.standard_normal(shape).astype(dtype)
              for shape in ((N, T, W), (N, H), (N, L, D), (N, T, H), (N, T, L))]
    return params, arrays


@pytest.mark.parametrize("cell_type, kind", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "N, T, W, H, L, D, A",
    # One row; row tiles of 13 with cut-short panels; the seed's 7x7 grid with a wide feature vector.
    [(1, 2, 3, 4, 2, 5, 3), (13, 3, 5, 33, 5, 17, 19), (4, 3, 6, 40, 49, 70, 24)],
)
def test_engine_equals_the_reference_through_forward_backward_and_step(step_products, cell_type, kind, dtype, N, T,
                                                                       W, H, L, D, A):
    rng = np.random.RandomState(N + L)
    engine, reference = cells(cell_type, kind, A)
    params, (x, h0, V, dh, dalphas) = inputs(rng, reference, N, T, W, H, L, D, dtype)
    images = np.array([N - 1 - n % N for n in range(N + 2)], dtype=np.int64)  # out of order, some twice
    results = []
    for cell in (engine, reference):
        h, cache = cell.run_forward(x, h0, params, V)
        dx, dh0, dV, grads = cell.run_backward(dh, cache, dalphas)
        state, context = cell.decoding_inputs(h0, V, params)
        stepped = cell.run_step(x[images, 0], tuple(s[images] for s in state), params, context, images)
        results.append({"h": h, "alpha": cell.attention_weights(cache), "dx": dx, "dh0": dh0, "dV": dV,
                        **{f"d{k}": v for k, v in grads.items()},
                        **{f"step state {s}": v for s, v in enumerate(stepped)}})
    got, want = results
    assert set(got) == set(want)
    errors = {name: scale_error(got[name], want[name]) for name in want}
    assert max(errors.values()) < TOLERANCE[np.dtype(dtype)], errors
    assert all(got[name].dtype == dtype for name in got)


def model_pair(cell_type, kind, dtype, L=6, D=10, H=16, A=12):
    models = [CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=8, hidden_dim=H, cell_type=cell_type, dtype=dtype,
                            backend=backend, seed=1, regions=L, attention="soft", attention_dim=A)
              for backend in ("cython", "numpy")]
    models[0].cell = cells(cell_type, kind, A)[0]
    models[1].params = {k: v.copy() for k, v in models[0].params.items()}
    return models


@pytest.mark.parametrize("cell_type, kind", PATHS)
def test_fused_greedy_and_beam_search_equal_the_reference_on_threads(cell_type, kind, threads):
    threads(2)
    engine, reference = model_pair(cell_type, kind, np.float64)
    rng = np.random.RandomState(2)
    features = rng.standard_normal((9, 6, 10))
    # Large output weights so that decoding ends at different steps per caption, and some never.
    engine.params["W_vocab"] = 3 * rng.standard_normal(engine.params["W_vocab"].shape)
    reference.params["W_vocab"] = engine.params["W_vocab"].copy()
    assert engine.fused_greedy(features, 12, with_weights=True) is not None  # the one-call loop runs
    captions, weights = greedy_attention(engine, features, max_length=12)
    want_captions, want_weights = greedy_attention(reference, features, max_length=12)
    np.testing.assert_array_equal(captions, want_captions)
    assert scale_error(weights, want_weights) < 1e-10
    np.testing.assert_array_equal(engine.sample(features, max_length=12), want_captions)
    beam, want_beam = (decode(model, features, 12, beam_size=3) for model in (engine, reference))
    np.testing.assert_array_equal(beam.captions, want_beam.captions)
    np.testing.assert_allclose(beam.log_probs, want_beam.log_probs, rtol=1e-10)


def test_float32_models_train_and_decode_on_the_engine_as_the_float64_reference_does():
    engine, _ = model_pair("lstm", "compiled", np.float32)
    reference = model_pair("lstm", "compiled", np.float64)[1]
    reference.params = {k: v.astype(np.float64) for k, v in engine.params.items()}
    rng = np.random.RandomState(3)
    features = rng.standard_normal((8, 6, 10))
    captions = rng.randint(3, 40, size=(8, 7))
    captions[:, 0], captions[::3, 5:] = 1, 0
    (loss, grads), (want_loss, want_grads) = (model.loss(features, captions) for model in (engine, reference))
    assert abs(loss - want_loss) < 1e-4 * abs(want_loss)
    assert max(scale_error(grads[k], want_grads[k]) for k in want_grads) < 1e-4


def test_one_thread_and_three_give_the_same_loss_and_gradients(threads):
    model = model_pair("gru", "compiled", np.float64)[0]
    rng = np.random.RandomState(4)
    features, captions = rng.standard_normal((10, 6, 10)), rng.randint(3, 40, size=(10, 6))
    captions[:, 0] = 1
    threads(1)
    loss, grads = model.loss(features, captions)
    threads(3)
    loss3, grads3 = model.loss(features, captions)
    assert parallel.get_num_threads() == 3
    assert abs(loss - loss3) < 1e-12 * abs(loss)
    assert max(scale_error(grads3[k], grads[k]) for k in grads) < 1e-12


# ------------------------------------------------------------------------------------------- argument checks


@pytest.fixture
def step_arguments():
    engine, reference = cells("lstm", "compiled", 3)
    rng = np.random.RandomState(5)
    params, (x, h0, V, _, _) = inputs(rng, reference, 2, 2, 3, 4, 5, 6, np.float64)
    state, (V, keys) = engine.decoding_inputs(h0, V, params)
    step_params = {k: params[k] for k in kernels.SOFT_STEP_PARAMETERS}
    return dict(x=x[:, 0].copy(), state=tuple(state[:-1]), V=V, keys=keys, images=np.arange(2), params=step_params,
                pointwise=engine.inner.pointwise)


@pytest.mark.parametrize("change, error, message", [
    (lambda a: a.update(x=np.zeros((2, 4))), ValueError, "params['Wx'] must have shape (4, 16)"),
    (lambda a: a.update(images=np.array([0, 2])), ValueError, "images[1] = 2 is outside the image rows of V [0, 2)"),
    (lambda a: a.update(images=np.array([0, -1])), ValueError, "images[1] = -1"),
    (lambda a: a.update(images=np.array([0.0, 1.0])), TypeError, "images must hold integer ids, got dtype float64"),
    (lambda a: a.update(images=np.arange(3)), ValueError, "images must have shape (2,) (from x, one image per row)"),
    (lambda a: a.update(keys=a["keys"][:, :, :2].copy()), ValueError, "keys must have shape (2, 5, 3)"),
    (lambda a: a.update(keys=a["keys"].astype(np.float32)), TypeError, "keys has dtype float32"),
    (lambda a: a.update(state=a["state"][:1]), ValueError, "state must be a tuple of 2 arrays"),
    (lambda a: a["params"].pop("att_wa"), ValueError, "params has no att_wa"),
    (lambda a: a["params"].update(att_Wbeta=np.zeros((4, 5))), ValueError, "params['att_Wbeta'] must have shape (4, 6)"),
    (lambda a: a["params"].update(att_Wz=np.zeros((16, 6)).T), ValueError, "params['att_Wz'] must be C-contiguous"),
    (lambda a: a.update(V=a["V"][:, :0]), ValueError, "V has an empty dimension"),
])
def test_a_bad_step_argument_is_named(step_arguments, change, error, message):
    change(step_arguments)
    with pytest.raises(error) as raised:
        kernels.soft_attended_step(**step_arguments)
    assert message in str(raised.value)


def test_a_bad_sequence_argument_is_named_and_a_cache_of_another_call_refused():
    engine, reference = cells("rnn", "compiled", 3)
    rng = np.random.RandomState(6)
    params, (x, h0, V, dh, dalphas) = inputs(rng, reference, 2, 3, 3, 4, 5, 6, np.float64)
    engine_params = {k: params[k] for k in kernels.SOFT_PARAMETERS}
    with pytest.raises(ValueError, match=r"V must have shape \(2, 5, 6\) \(from x\)"):
        kernels.soft_attended_forward(x, (h0,), V[:1].copy(), engine_params, engine.inner.pointwise)
    h, cache = kernels.soft_attended_forward(x, (h0,), V, engine_params, engine.inner.pointwise)
    with pytest.raises(ValueError, match=r"dalphas must have shape \(2, 3, 5\)"):
        kernels.soft_attended_backward(dh, cache, dalphas[:, :, :2].copy())
    with pytest.raises(TypeError, match="SoftAttendedCache"):
        kernels.soft_attended_backward(dh, (cache,))
    with pytest.raises(ValueError, match="params must be a dict"):
        kernels.soft_attended_forward(x, (h0,), V, list(engine_params.values()), engine.inner.pointwise)


def test_greedy_decoding_names_word_ids_and_sizes():
    engine, reference = cells("gru", "compiled", 3)
    rng = np.random.RandomState(7)
    params, (x, h0, V, _, _) = inputs(rng, reference, 2, 2, 3, 4, 5, 6, np.float64)
    state, (V, keys) = engine.decoding_inputs(h0, V, params)
    step_params = {k: params[k] for k in kernels.SOFT_STEP_PARAMETERS}
    W_embed, W_vocab, b_vocab = rng.standard_normal((9, 3)), rng.standard_normal((4, 9)), np.zeros(9)
    call = lambda **change: kernels.soft_attended_greedy_decode(  # noqa: E731
        **{**dict(state0=tuple(state[:-1]), V=V, keys=keys, W_embed=W_embed, params=step_params, W_vocab=W_vocab,
                  b_vocab=b_vocab, start=1, end=2, null=0, max_length=4, pointwise=engine.inner.pointwise), **change})
    captions, weights = call()
    assert captions.shape == (2, 4) and weights.shape == (2, 4, 5)
    np.testing.assert_allclose(weights[captions != 0].sum(axis=-1), 1, rtol=1e-12)
    with pytest.raises(ValueError, match=r"start must be a word id in \[0, 9\)"):
        call(start=9)
    with pytest.raises(ValueError, match=r"W_vocab must have shape \(4, 9\)"):
        call(W_vocab=W_vocab[:, :8].copy())
    with pytest.raises(ValueError, match="max_length"):
        call(max_length=0)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_without_the_grids_gradient_every_other_gradient_is_unchanged(cell_type):
    engine, reference = cells(cell_type, "compiled", 7)
    rng = np.random.RandomState(8)
    params, (x, h0, V, dh, dalphas) = inputs(rng, reference, 5, 4, 6, 9, 10, 11, np.float64)
    for cell in (engine, reference):
        _, cache = cell.run_forward(x, h0, params, V)
        full = cell.run_backward(dh, cache, dalphas)
        _, cache = cell.run_forward(x, h0, params, V)
        data = cell.run_backward(dh, cache, dalphas, context_grad=False)
        assert full[2] is not None and data[2] is None
        for a, b in zip(full[:2], data[:2]):
            np.testing.assert_array_equal(a, b)
        assert {k: v.tolist() for k, v in full[3].items()} == {k: v.tolist() for k, v in data[3].items()}
