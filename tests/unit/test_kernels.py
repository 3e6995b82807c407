"""captionkit.kernels against the numpy reference (captionkit.layers), numerical gradients and the seed's numbers.

float64 results must equal the reference to 1e-10 relative; float32 results must be within 1e-4 relative (in norm)
of the float64 reference on the same inputs. Every test here skips when the extension is not built.
"""
import numpy as np
import pytest

from captionkit import CaptioningRNN, kernels, layers, optim
from captionkit.cells import get_cell
from captionkit.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")

DTYPES = [np.float64, np.float32]
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}


def close(actual, expected, dtype):
    """Relative error in norm below the dtype's tolerance, and the compiled result keeps the input dtype."""
    actual = np.asarray(actual)
    assert actual.dtype == np.dtype(dtype) or actual.ndim == 0
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(np.linalg.norm(expected), 1e-30)
    error = np.linalg.norm(actual.astype(np.float64) - expected) / scale
    assert error < TOLERANCE[dtype], f"relative error {error:.3g}"


def matches_numerical(analytic, numerical, limit=1e-7):
    """Centred differences in float64 carry about 1e-9 relative error; a wrong gradient is off by far more."""
    error = np.linalg.norm(analytic - numerical) / max(np.linalg.norm(numerical), 1e-30)
    assert error < limit, f"relative error {error:.3g} against the numerical gradient"


def arrays(rng, dtype, *shapes, scale=1.0):
    return [(scale * rng.standard_normal(shape)).astype(dtype) for shape in shapes]


def as64(*arrays_):
    return [a.astype(np.float64) for a in arrays_]


# ---------------------------------------------------------------------- reference equality


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, T, D, H", [(1, 1, 1, 1), (3, 5, 4, 6), (7, 16, 9, 12)])
def test_rnn_forward_and_backward_equal_reference(dtype, N, T, D, H):
    rng = np.random.default_rng(N * 100 + T)
    x, h0, Wx, Wh, b, dh = arrays(rng, dtype, (N, T, D), (N, H), (D, H), (H, H), (H,), (N, T, H), scale=0.5)
    h, cache = kernels.rnn_forward(x, h0, Wx, Wh, b)
    h_ref, cache_ref = layers.rnn_forward(*as64(x, h0, Wx, Wh, b))
    close(h, h_ref, dtype)
    # The backward is compared on the forward it was given (see reference_rnn_cache in the property tests).
    previous = [h0] + [h[:, t] for t in range(T - 1)]
    cache_ref = [tuple(as64(x[:, t], previous[t], Wx, Wh, h[:, t])) for t in range(T)]
    grads = kernels.rnn_backward(dh, cache)
    grads_ref = layers.rnn_backward(dh.astype(np.float64), cache_ref)
    for got, want in zip(grads, grads_ref):
        close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rnn_step_equals_reference_and_feeds_its_backward(dtype):
    rng = np.random.default_rng(1)
    x, h, Wx, Wh, b, dnext = arrays(rng, dtype, (4, 3), (4, 5), (3, 5), (5, 5), (5,), (4, 5))
    next_h, cache = kernels.rnn_step_forward(x, h, Wx, Wh, b)
    next_ref, cache_ref = layers.rnn_step_forward(*as64(x, h, Wx, Wh, b))
    close(next_h, next_ref, dtype)
    # The cache has the reference's layout, so the reference backward takes it.
    for got, want in zip(layers.rnn_step_backward(dnext, cache), layers.rnn_step_backward(*as64(dnext), cache_ref)):
        close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_word_embedding_equals_reference_with_repeated_words(dtype):
    rng = np.random.default_rng(2)
    V, D = 6, 4
    x = np.array([[0, 5, 5, 2], [2, 2, 2, 1]], dtype=np.int32)  # repeats must accumulate
    (W,) = arrays(rng, dtype, (V, D))
    out, cache = kernels.word_embedding_forward(x, W)
    np.testing.assert_array_equal(out, W[x])
    dout = rng.standard_normal(out.shape).astype(dtype)
    close(kernels.word_embedding_backward(dout, cache),
          layers.word_embedding_backward(dout.astype(np.float64), (x, W.shape, np.float64)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_equals_reference(dtype):
    rng = np.random.default_rng(3)
    x, w, b, dout = arrays(rng, dtype, (5, 7), (7, 3), (3,), (5, 3))
    out, cache = kernels.affine_forward(x, w, b)
    out_ref, cache_ref = layers.affine_forward(*as64(x, w, b))
    close(out, out_ref, dtype)
    for got, want in zip(kernels.affine_backward(dout, cache), layers.affine_backward(dout.astype(np.float64),
                                                                                      cache_ref)):
        close(got, want, dtype)
    dx, dw, db = kernels.affine_backward(dout, cache, input_grad=False)
    assert dx is None
    close(dw, cache_ref[0].T @ dout.astype(np.float64), dtype)


def reference_output_layer(h, w, b, y, mask):
    scores, cache = layers.temporal_affine_forward(h, w, b)
    loss, dscores = layers.temporal_softmax_loss(scores, y, mask)
    dh, dw, db = layers.temporal_affine_backward(dscores, cache)
    return loss, dh, dw, db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", ["all", "some", "none"])
def test_output_layer_equals_reference(dtype, mask_kind):
    rng = np.random.default_rng(4)
    N, T, H, V = 3, 6, 5, 11
    h, w, b = arrays(rng, dtype, (N, T, H), (H, V), (V,), scale=2.0)
    y = rng.integers(0, V, size=(N, T))
    mask = {"all": np.ones((N, T), bool), "some": rng.random((N, T)) < 0.6, "none": np.zeros((N, T), bool)}[mask_kind]
    got = kernels.temporal_softmax_affine_loss(h, w, b, y, mask)
    want = reference_output_layer(*as64(h, w, b), y, mask)
    assert abs(got[0] - want[0]) <= TOLERANCE[dtype] * max(abs(want[0]), 1e-30)
    for a, e in zip(got[1:], want[1:]):
        close(a, e, dtype)


def test_output_layer_matches_seed_softmax_loss_values():
    # The seed notebook's sanity checks of temporal_softmax_loss: ~2.3, ~23 and ~2.2 for these random inputs.
    rng = np.random.RandomState(0)
    for N, T, V, p, expected in ((100, 1, 10, 1.0, 2.3), (100, 10, 10, 1.0, 23.0), (5000, 10, 10, 0.1, 2.2)):
        h = np.ascontiguousarray(0.001 * rng.randn(N, T, V))
        y = rng.randint(V, size=(N, T))
        mask = rng.rand(N, T) <= p
        loss, *_ = kernels.temporal_softmax_affine_loss(h, np.eye(V), np.zeros(V), y, mask)
        assert abs(loss - expected) < 0.1 * expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_argmax_equals_numpy(dtype):
    rng = np.random.default_rng(5)
    h, w, b = arrays(rng, dtype, (9, 4), (4, 13), (13,))
    np.testing.assert_array_equal(kernels.affine_argmax(h, w, b), (h @ w + b).argmax(axis=1))


def test_affine_argmax_ties_and_nan_follow_numpy():
    h = np.ones((3, 1))
    w = np.array([[1.0, 3.0, 3.0, 2.0]])
    b = np.zeros(4)
    assert list(kernels.affine_argmax(h, w, b)) == [1, 1, 1]
    w_nan = np.array([[1.0, 3.0, np.nan, np.nan]])
    assert list(kernels.affine_argmax(h, w_nan, b)) == [2, 2, 2] == list((h @ w_nan).argmax(axis=1))


def log_softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 13])
def test_log_softmax_topk_equals_stable_argsort(dtype, k):
    rng = np.random.default_rng(6)
    h, w, b = arrays(rng, dtype, (7, 4), (4, 13), (13,))
    w[:, 5] = w[:, 2]  # a tie in every row: the lower id must come first
    b[5] = b[2]
    logp, ids = kernels.affine_log_softmax_topk(h, w, b, k)
    ref = log_softmax((h @ w + b).astype(np.float64))
    order = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids, order)
    close(logp, np.take_along_axis(ref, order, axis=1), dtype)


def test_topk_ranks_nan_last():
    h = np.ones((1, 1))
    w = np.array([[0.0, np.nan, 2.0, 1.0]])
    logp, ids = kernels.affine_log_softmax_topk(h, w, np.zeros(4), 4)
    # Words are ranked by score, NaN last; a NaN score makes the whole row's log-softmax NaN, as in numpy.
    assert list(ids[0]) == [2, 3, 0, 1] and np.isnan(logp).all()
    ref_logp, ref_ids = layers.affine_log_softmax_topk(h, w, np.zeros(4), 4)
    np.testing.assert_array_equal(ref_ids, ids)
    w = np.array([[0.0, -np.inf, 2.0, 1.0]])
    logp, ids = kernels.affine_log_softmax_topk(h, w, np.zeros(4), 4)
    assert list(ids[0]) == [2, 3, 0, 1] and logp[0, 3] == -np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_equals_optim_adam_over_several_steps(dtype):
    rng = np.random.default_rng(7)
    (w,) = arrays(rng, dtype, (4, 6))
    w_ref, config = w.copy(), {"learning_rate": 1e-2}
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, 6):
        (dw,) = arrays(rng, dtype, w.shape)
        kernels.adam_update(w, dw, m, v, t, learning_rate=1e-2)
        w_ref, config = optim.adam(w_ref.astype(np.float64), dw.astype(np.float64), config)
        close(w, w_ref, dtype)
        close(m, config["m"], dtype)
        close(v, config["v"], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_adam_update_many_equals_optim_adam_on_every_array(dtype, threads):
    from captionkit import parallel

    rng = np.random.default_rng(8)
    # 70000 + 15 + 120000 elements: the threads' slices start and end inside arrays, not only at their edges.
    shapes = [(70000,), (3, 5), (300, 400)]
    ws = arrays(rng, dtype, *shapes)
    refs = [(w.copy(), {"learning_rate": 1e-2}) for w in ws]
    ms, vs = [np.zeros_like(w) for w in ws], [np.zeros_like(w) for w in ws]
    previous = parallel.set_num_threads(threads)
    try:
        for t in range(1, 4):
            dws = arrays(rng, dtype, *shapes)
            kernels.adam_update_many(ws, dws, ms, vs, t, learning_rate=1e-2, map_shards=parallel.map_shards)
            refs = [optim.adam(w_ref.astype(np.float64), dw.astype(np.float64), config)
                    for (w_ref, config), dw in zip(refs, dws)]
    finally:
        parallel.set_num_threads(previous)
    for w, m, v, (w_ref, config) in zip(ws, ms, vs, refs):
        close(w, w_ref, dtype)
        close(m, config["m"], dtype)
        close(v, config["v"], dtype)


def test_adam_update_many_names_the_array_at_fault():
    def call(ws=None, dws=None, ms=None, vs=None, t=1):
        fresh = lambda: [np.zeros(4), np.zeros((2, 3))]  # noqa: E731
        kernels.adam_update_many(fresh() if ws is None else ws, fresh() if dws is None else dws,
                                 fresh() if ms is None else ms, fresh() if vs is None else vs, t)

    with pytest.raises(TypeError, match="ws must be a list or tuple of arrays, got ndarray"):
        call(ws=np.zeros(4))
    with pytest.raises(ValueError, match=r"one length, got 2 \(ws\), 1 \(dws\)"):
        call(dws=[np.zeros(4)])
    with pytest.raises(ValueError, match="ws is empty"):
        call(ws=[], dws=[], ms=[], vs=[])
    with pytest.raises(ValueError, match=r"dws\[1\] must have shape \(2, 3\) \(from ws\[1\]\), got \(3, 2\)"):
        call(dws=[np.zeros(4), np.zeros((3, 2))])
    with pytest.raises(TypeError, match=r"ws\[1\] has dtype float32 but ws\[0\] has float64"):
        call(ws=[np.zeros(4), np.zeros((2, 3), np.float32)])
    read_only = np.zeros((2, 3))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"ms\[1\] is read-only"):
        call(ms=[np.zeros(4), read_only])
    with pytest.raises(ValueError, match="t must be"):
        call(t=0)
    shared = np.zeros(10)
    with pytest.raises(ValueError, match=r"ws\[0\] and vs\[1\] overlap in memory"):
        call(ws=[shared[:4], np.zeros((2, 3))], vs=[np.zeros(4), shared[3:9].reshape(2, 3)])
    with pytest.raises(ValueError, match=r"ms\[0\] and dws\[1\] overlap in memory"):
        call(ms=[shared[:4], np.zeros((2, 3))], dws=[np.zeros(4), shared[2:8].reshape(2, 3)])
    # Gradients are only read, so two of them may be one array.
    gradient = np.ones(4)
    w = [np.zeros(4), np.zeros(4)]
    kernels.adam_update_many(w, [gradient, gradient], [np.zeros(4), np.zeros(4)], [np.zeros(4), np.zeros(4)], 1)
    np.testing.assert_array_equal(w[0], w[1])
    assert (w[0] < 0).all()


@pytest.fixture
def scipy_blas():
    """The kernels bound to scipy's BLAS (the fallback when scipy-openblas32 is missing) for one test."""
    import captionkit._ext as ext

    addresses, source, avx512 = ext._scipy_cython_blas()
    ext._blas.bind(*addresses, source, avx512)
    yield
    ext._blas.bind(ext._sgemm, ext._dgemm, ext._source, ext._avx512)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fallback_blas_gives_the_reference_numbers(scipy_blas, dtype):
    assert kernels.blas() == "scipy.linalg.cython_blas"
    test_rnn_forward_and_backward_equal_reference(dtype, 3, 5, 4, 6)
    test_output_layer_equals_reference(dtype, "some")


# ---------------------------------------------------------------------- gradients of the compiled path


def test_rnn_gradients_match_numerical():
    rng = np.random.default_rng(8)
    x, h0, Wx, Wh, b, dh = arrays(rng, np.float64, (2, 4, 3), (2, 5), (3, 5), (5, 5), (5,), (2, 4, 5))
    _, cache = kernels.rnn_forward(x, h0, Wx, Wh, b)
    grads = kernels.rnn_backward(dh, cache)
    for value, grad in zip((x, h0, Wx, Wh, b), grads):
        numerical = eval_numerical_gradient_array(lambda _: kernels.rnn_forward(x, h0, Wx, Wh, b)[0], value, dh)
        matches_numerical(grad, numerical)


def test_output_layer_gradients_match_numerical():
    rng = np.random.default_rng(9)
    h, w, b = arrays(rng, np.float64, (2, 3, 4), (4, 6), (6,))
    y = rng.integers(0, 6, size=(2, 3))
    mask = np.array([[True, True, False], [True, False, False]])
    _, dh, dw, db = kernels.temporal_softmax_affine_loss(h, w, b, y, mask)
    for value, grad in ((h, dh), (w, dw), (b, db)):
        loss = lambda _: kernels.temporal_softmax_affine_loss(h, w, b, y, mask)[0]  # noqa: E731
        matches_numerical(grad, eval_numerical_gradient(loss, value, verbose=False, h=1e-6))


def test_embedding_gradient_matches_numerical():
    rng = np.random.default_rng(10)
    x = np.array([[1, 2, 1], [0, 1, 3]])
    (W,) = arrays(rng, np.float64, (4, 3))
    out, cache = kernels.word_embedding_forward(x, W)
    dout = rng.standard_normal(out.shape)
    numerical = eval_numerical_gradient_array(lambda _: kernels.word_embedding_forward(x, W)[0], W, dout)
    matches_numerical(kernels.word_embedding_backward(dout, cache), numerical)


# ---------------------------------------------------------------------- the model on both backends

VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i for i in range(3, 12)}}


def make_model(dtype, backend):
    return CaptioningRNN(VOCAB, input_dim=6, wordvec_dim=5, hidden_dim=7, dtype=dtype, backend=backend, seed=3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_model_loss_and_gradients_equal_numpy_backend(dtype):
    compiled, reference = make_model(dtype, "cython"), make_model(np.float64, "numpy")
    assert compiled.backend == "cython" and compiled.cell.backend == "cython"
    reference.params = {name: value.astype(np.float64) for name, value in compiled.params.items()}
    rng = np.random.default_rng(11)
    features = rng.standard_normal((4, 6))
    captions = rng.integers(0, len(VOCAB), size=(4, 9))
    captions[:, 0] = 1
    captions[1, 5:] = 0  # padding: masked positions
    loss, grads = compiled.loss(features.astype(dtype), captions)
    loss_ref, grads_ref = reference.loss(features.astype(dtype), captions)
    assert abs(loss - loss_ref) <= TOLERANCE[dtype] * abs(loss_ref)
    assert sorted(grads) == sorted(grads_ref)
    for name in grads:
        close(grads[name], grads_ref[name], dtype)


def test_model_gradients_on_compiled_backend_match_numerical():
    compiled = make_model(np.float64, "cython")
    rng = np.random.default_rng(12)
    features = rng.standard_normal((2, 6))
    captions = rng.integers(0, len(VOCAB), size=(2, 5))
    _, grads = compiled.loss(features, captions)
    for name in sorted(grads):
        numerical = eval_numerical_gradient(lambda _: compiled.loss(features, captions)[0], compiled.params[name],
                                            verbose=False, h=1e-6)
        matches_numerical(grads[name], numerical, limit=1e-6)


def test_model_fixed_parameter_loss_matches_seed_on_compiled_backend():
    # The seed notebook's fixed-parameter check (expected loss 9.83235591003), on the compiled path.
    vocab = {"<NULL>": 0, "cat": 2, "dog": 3}
    N, D, W, H, T = 10, 20, 30, 40, 13
    model = CaptioningRNN(vocab, input_dim=D, wordvec_dim=W, hidden_dim=H, dtype=np.float64, backend="cython")
    for name, value in model.params.items():
        model.params[name] = np.linspace(-1.4, 1.3, num=value.size).reshape(*value.shape)
    features = np.linspace(-1.5, 0.3, num=N * D).reshape(N, D)
    captions = (np.arange(N * T) % len(vocab)).reshape(N, T)
    loss, _ = model.loss(features, captions)
    assert abs(loss - 9.83235591003) < 1e-10


def test_model_sample_equals_numpy_backend():
    # float64, where the two paths differ by rounding far below any gap between the best two scores.
    compiled, reference = make_model(np.float64, "cython"), make_model(np.float64, "numpy")
    features = np.random.default_rng(13).standard_normal((5, 6)) * 3
    np.testing.assert_array_equal(compiled.sample(features, max_length=8), reference.sample(features, max_length=8))
    assert compiled.sample(features[:0], max_length=4).shape == (0, 4)


def test_backend_switch(monkeypatch):
    from captionkit.backend import resolve_backend

    monkeypatch.setenv("CAPTIONKIT_BACKEND", "numpy")
    assert CaptioningRNN(VOCAB).backend == "numpy"
    assert CaptioningRNN(VOCAB).cell.backend == "numpy"
    monkeypatch.setenv("CAPTIONKIT_BACKEND", "auto")
    assert CaptioningRNN(VOCAB).backend == "cython"
    # Without the built extension, asking for it is an error, never a silent fallback.
    monkeypatch.setattr(kernels._built, "_IMPORT_ERROR", ImportError("simulated: not built"))
    with pytest.raises(RuntimeError, match="not built"):
        resolve_backend("cython")
    assert resolve_backend("auto") == "numpy"
    with pytest.raises(RuntimeError, match="not built"):
        kernels.rnn_forward(np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1))


# ---------------------------------------------------------------------- bad calls


def rnn_args(dtype=np.float64):
    rng = np.random.default_rng(14)
    return dict(zip(("x", "h0", "Wx", "Wh", "b"), arrays(rng, dtype, (2, 3, 4), (2, 5), (4, 5), (5, 5), (5,))))


@pytest.mark.parametrize("name", ["x", "h0", "Wx", "Wh", "b"])
def test_rnn_forward_names_the_bad_argument(name):
    args = rnn_args()
    named = rf"\b{name}\b"
    for bad_dtype in (np.float32, np.int64, np.float16):
        with pytest.raises(TypeError, match=named):
            kernels.rnn_forward(**dict(args, **{name: args[name].astype(bad_dtype)}))
    wrong_shape = np.zeros(args[name].shape[:-1] + (args[name].shape[-1] + 1,))
    with pytest.raises(ValueError, match=named):
        kernels.rnn_forward(**dict(args, **{name: wrong_shape}))
    with pytest.raises(ValueError, match=named):
        kernels.rnn_forward(**dict(args, **{name: args[name][..., None]}))
    if args[name].ndim > 1:
        with pytest.raises(ValueError, match=f"{name} must be C-contiguous"):
            kernels.rnn_forward(**dict(args, **{name: np.asfortranarray(args[name])}))
    with pytest.raises(TypeError, match=named):
        kernels.rnn_forward(**dict(args, **{name: args[name].tolist()}))


def test_read_only_inputs_are_accepted_and_read_only_outputs_refused():
    args = rnn_args()
    for value in args.values():
        value.flags.writeable = False
    h, cache = kernels.rnn_forward(**args)
    kernels.rnn_backward(np.ones_like(h), cache)
    w = np.ones(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match="w is read-only"):
        kernels.adam_update(w, np.ones(3), np.zeros(3), np.zeros(3), 1)
    m = np.zeros(3)
    with pytest.raises(ValueError, match="overlap"):
        kernels.adam_update(np.ones(3), np.ones(3), m, m, 1)


def test_empty_batches_and_steps_are_refused():
    args = rnn_args()
    with pytest.raises(ValueError, match="x has an empty dimension"):
        kernels.rnn_forward(**dict(args, x=np.zeros((2, 0, 4))))
    with pytest.raises(ValueError, match="x has an empty dimension"):
        kernels.rnn_forward(**dict(args, x=np.zeros((0, 3, 4)), h0=np.zeros((0, 5))))
    with pytest.raises(ValueError, match="x has an empty dimension"):
        kernels.word_embedding_forward(np.zeros((3, 0), dtype=int), np.ones((4, 2)))
    with pytest.raises(ValueError, match="h has an empty dimension"):
        kernels.affine_argmax(np.zeros((0, 2)), np.ones((2, 3)), np.ones(3))


def test_out_of_range_ids_are_refused():
    W = np.ones((4, 2))
    for bad in (4, -1, 2**40):
        with pytest.raises(ValueError, match=r"x\[1, 0\] = .* outside the vocabulary \[0, 4\)"):
            kernels.word_embedding_forward(np.array([[0, 1], [bad, 2]]), W)
    with pytest.raises(TypeError, match="x must hold integer ids"):
        kernels.word_embedding_forward(np.array([[0.0, 1.0]]), W)
    with pytest.raises(TypeError, match="x must hold integer ids"):
        kernels.word_embedding_forward(np.array([[True, False]]), W)
    h, w, b = np.ones((1, 2, 3)), np.ones((3, 4)), np.ones(4)
    with pytest.raises(ValueError, match=r"y\[0, 1\] = 9"):
        kernels.temporal_softmax_affine_loss(h, w, b, np.array([[0, 9]]), np.ones((1, 2), bool))
    with pytest.raises(TypeError, match="mask must have dtype bool"):
        kernels.temporal_softmax_affine_loss(h, w, b, np.array([[0, 1]]), np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
        kernels.affine_log_softmax_topk(np.ones((1, 3)), w, b, 5)


def test_caches_are_checked_again_at_backward():
    args = rnn_args()
    h, cache = kernels.rnn_forward(**args)
    with pytest.raises(TypeError, match="GatedCache"):
        kernels.rnn_backward(h, (args["x"], h))
    with pytest.raises(ValueError, match="dh must have shape"):
        kernels.rnn_backward(h[:, :2].copy(), cache)
    cache.states.shape = (1, 3, 2, 5)  # reshaped in place between forward and backward
    with pytest.raises(ValueError, match="cache states must have shape"):
        kernels.rnn_backward(np.ones((2, 3, 5)), cache)
    cache.states.shape = (1, 2, 3, 5)
    cache.A.shape = (2, 5, 3)
    with pytest.raises(ValueError, match="cache A must have shape"):
        kernels.rnn_backward(np.ones((2, 3, 5)), cache)
    out, emb_cache = kernels.word_embedding_forward(np.array([[0, 1]]), np.ones((2, 3)))
    with pytest.raises(ValueError, match="dout must have shape"):
        kernels.word_embedding_backward(np.ones((1, 2, 4)), emb_cache)
    with pytest.raises(ValueError, match=r"cache x\[0, 1\] = 1 is outside"):
        kernels.word_embedding_backward(out, (emb_cache[0], (1, 3), np.float64))


def test_sizes_beyond_32_bit_blas_are_refused_before_any_work():
    # Small inputs whose outputs would pass 2**31 elements.
    with pytest.raises(ValueError, match=r"h would have shape \(2048, 1024, 1024\)"):
        kernels.rnn_forward(np.zeros((2048, 1024, 1), np.float32), np.zeros((2048, 1024), np.float32),
                            np.zeros((1, 1024), np.float32), np.zeros((1024, 1024), np.float32),
                            np.zeros(1024, np.float32))
    with pytest.raises(ValueError, match="scores would have shape"):
        kernels.affine_argmax(np.zeros((2**21, 1), np.float32), np.zeros((1, 1024), np.float32),
                              np.zeros(1024, np.float32))
    # An input of 2**31 ids (virtual memory, never touched) is refused before its values are read.
    with pytest.raises(ValueError, match="x would have shape"):
        kernels.word_embedding_forward(np.empty((1, 2**31), np.int8), np.ones((3, 2)))


DECODING_VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(17)}}


@pytest.mark.parametrize("with_end", [True, False])
def test_fused_greedy_decoding_equals_the_step_loop_on_numpy(step_products, threads, with_end):
    threads(1)
    vocab = DECODING_VOCAB if with_end else {w: i for w, i in DECODING_VOCAB.items() if w != "<END>"}
    make = lambda backend: CaptioningRNN(vocab, input_dim=9, wordvec_dim=6, hidden_dim=35, dtype=np.float64,  # noqa
                                         backend=backend, seed=8)
    compiled, reference = make("cython"), make("numpy")
    # Large weights make the captions vary and let some end early (the test checks that some do and some do not).
    for m in (compiled, reference):
        m.params = {name: value * 4 for name, value in make("numpy").params.items()}
    features = np.random.default_rng(9).standard_normal((17, 9)) * 2
    expected = reference.sample(features, max_length=12)
    got = compiled.sample(features, max_length=12)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int32
    if with_end:
        ended = (expected == 2).any(axis=1)
        assert ended.any() and not ended.all()


def test_fused_greedy_decoding_names_bad_arguments():
    rng = np.random.default_rng(10)
    N, H, V, W = 3, 5, 7, 4
    h0, W_embed, Wx, Wh, b = (rng.standard_normal(s) for s in ((N, H), (V, W), (W, H), (H, H), (H,)))
    W_vocab, b_vocab = rng.standard_normal((H, V)), rng.standard_normal(V)
    args = dict(h0=h0, W_embed=W_embed, Wx=Wx, Wh=Wh, b=b, W_vocab=W_vocab, b_vocab=b_vocab, start=1, end=2, null=0,
                max_length=4, pointwise=get_cell("rnn")(backend="cython").pointwise)
    assert kernels.gated_greedy_decode(**args).shape == (N, 4)
    for change, message in [
        (dict(start=V), r"start must be a word id in \[0, 7\)"),
        (dict(end=-1), r"end must be a word id"),
        (dict(null=1.0), r"null must be an integer word id"),
        (dict(max_length=0), r"max_length must be in"),
        (dict(W_vocab=W_vocab[:, :-1].copy()), r"W_vocab must have shape \(5, 7\)"),
        (dict(Wh=Wh.astype(np.float32)), r"Wh"),
        (dict(b_vocab=b_vocab[:-1]), r"b_vocab must have shape \(7,\)"),
    ]:
        with pytest.raises((TypeError, ValueError), match=message):
            kernels.gated_greedy_decode(**{**args, **change})
