"""CaptioningRNN: the seed notebook's model checks, decoding and input validation."""
import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.gradient_check import eval_numerical_gradient, rel_error

TOY_VOCAB = {"<NULL>": 0, "cat": 2, "dog": 3}


def test_fixed_parameter_loss_matches_seed():
    N, D, W, H = 10, 20, 30, 40
    V, T = len(TOY_VOCAB), 13
    model = CaptioningRNN(TOY_VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type="rnn", dtype=np.float64,
                          backend="numpy")
    for k, v in model.params.items():
        model.params[k] = np.linspace(-1.4, 1.3, num=v.size).reshape(*v.shape)
    features = np.linspace(-1.5, 0.3, num=N * D).reshape(N, D)
    captions = (np.arange(N * T) % V).reshape(N, T)
    loss, _ = model.loss(features, captions)
    assert abs(loss - 9.83235591003) < 1e-10


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_model_gradients_match_numerical(backend):
    np.random.seed(231)
    captions = np.random.randint(len(TOY_VOCAB), size=(2, 3))
    features = np.random.randn(2, 4)
    model = CaptioningRNN(TOY_VOCAB, input_dim=4, wordvec_dim=5, hidden_dim=6, cell_type="rnn", dtype=np.float64,
                          backend=backend)
    loss, grads = model.loss(features, captions)
    assert sorted(grads) == sorted(model.params)
    for name in sorted(grads):
        f = lambda _: model.loss(features, captions)[0]  # noqa: E731
        numerical = eval_numerical_gradient(f, model.params[name], verbose=False, h=1e-6)
        assert rel_error(numerical, grads[name]) < 5e-6, name


def test_initialisation_follows_the_assignment():
    np.random.seed(0)
    model = CaptioningRNN({"<NULL>": 0, "<START>": 1, "<END>": 2, "x": 3}, input_dim=7, wordvec_dim=5, hidden_dim=6,
                          dtype=np.float64)
    # Same draws, same order, as cs231n/classifiers/rnn.py: W_embed, W_proj, Wx, Wh, W_vocab.
    np.random.seed(0)
    expected = {
        "W_embed": np.random.randn(4, 5) / 100,
        "W_proj": np.random.randn(7, 6) / np.sqrt(7),
        "Wx": np.random.randn(5, 6) / np.sqrt(5),
        "Wh": np.random.randn(6, 6) / np.sqrt(6),
        "W_vocab": np.random.randn(6, 4) / np.sqrt(6),
    }
    assert list(model.params) == ["W_embed", "W_proj", "b_proj", "Wx", "Wh", "b", "W_vocab", "b_vocab"]
    for name, value in expected.items():
        np.testing.assert_array_equal(model.params[name], value)
    for name in ("b_proj", "b", "b_vocab"):
        assert not model.params[name].any()


def test_dtype_is_respected():
    model = CaptioningRNN(TOY_VOCAB, input_dim=4, wordvec_dim=3, hidden_dim=5)
    assert all(v.dtype == np.float32 for v in model.params.values())
    loss, grads = model.loss(np.ones((2, 4)), np.array([[1, 2, 0], [2, 2, 1]]))
    assert all(g.dtype == np.float32 for g in grads.values())


def _vocab(words):
    return {w: i for i, w in enumerate(["<NULL>", "<START>", "<END>", "<UNK>", *words])}


def test_sample_is_greedy_and_pads_after_end():
    vocab = _vocab(["a", "b"])
    model = CaptioningRNN(vocab, input_dim=3, wordvec_dim=4, hidden_dim=5, dtype=np.float64, seed=1)
    features = np.random.RandomState(2).randn(6, 3)
    captions = model.sample(features, max_length=7)
    assert captions.shape == (6, 7) and captions.dtype == np.int32

    # Independent oracle: replay the greedy recurrence by hand with the reference step.
    from captionkit.layers import rnn_step_forward

    p = model.params
    for n in range(6):
        h, word, expected = features[n : n + 1] @ p["W_proj"] + p["b_proj"], vocab["<START>"], []
        for _ in range(7):
            h, _ = rnn_step_forward(p["W_embed"][[word]], h, p["Wx"], p["Wh"], p["b"])
            word = int(np.argmax(h @ p["W_vocab"] + p["b_vocab"]))
            expected.append(word)
            if word == vocab["<END>"]:
                break
        expected += [vocab["<NULL>"]] * (7 - len(expected))
        assert captions[n].tolist() == expected


def test_unknown_cell_names_the_registered_cells():
    with pytest.raises(ValueError, match=r"unknown cell_type 'nope'.*registered cells: .*rnn"):
        CaptioningRNN(TOY_VOCAB, cell_type="nope")


@pytest.mark.parametrize(
    "features, captions, error, match",
    [
        (np.ones((2, 5)), np.ones((2, 3), int), ValueError, r"features must have shape \(N, 4\)"),
        (np.ones((2, 4)), np.ones((3, 3), int), ValueError, r"captions must have shape .*N=2"),
        (np.ones((2, 4)), np.ones((2, 1), int), ValueError, r"T >= 2"),
        (np.ones((2, 4)), np.full((2, 3), 7), ValueError, r"word id 7, outside the vocabulary \[0, 3\)"),
        (np.ones((2, 4)), np.full((2, 3), -1), ValueError, r"word id -1"),
        (np.ones((2, 4)), np.ones((2, 3)), TypeError, r"integer word ids"),
    ],
)
def test_loss_rejects_bad_input(features, captions, error, match):
    model = CaptioningRNN(TOY_VOCAB, input_dim=4, wordvec_dim=3, hidden_dim=5)
    with pytest.raises(error, match=match):
        model.loss(features, captions)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"dtype": np.int32}, "dtype must be float32 or float64"), ({"hidden_dim": 0}, "hidden_dim must be a positive"),
     ({"word_to_idx": {"a": 1}}, "'<NULL>'")],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    args = {"word_to_idx": TOY_VOCAB, "input_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        CaptioningRNN(**args)


def test_sample_needs_start_token():
    model = CaptioningRNN(TOY_VOCAB, input_dim=4, wordvec_dim=3, hidden_dim=5)
    with pytest.raises(ValueError, match="<START>"):
        model.sample(np.ones((1, 4)))


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_the_step_estimate_bounds_what_a_step_allocates(backend):
    """tracemalloc sees every numpy array a loss() call makes: their peak must stay below the model's estimate, for
    every registered cell and shapes where the vocabulary, the hidden state or the batch dominates."""
    import tracemalloc

    from captionkit.cells import available_cells
    from captionkit.model import CaptioningRNN

    for cell in available_cells():
        for N, T, V, D, W, H in [(64, 12, 40, 20, 16, 24), (32, 9, 300, 10, 8, 64), (100, 17, 1004, 64, 32, 128)]:
            words = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(V - 3)}}
            model = CaptioningRNN(words, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell, backend=backend,
                                  seed=0)
            rng = np.random.default_rng(0)
            features = rng.standard_normal((N, D))
            captions = rng.integers(3, V, size=(N, T))
            model.loss(features, captions)  # first-call caches and thread pools are not the step's
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                model.loss(features, captions)
                peak = tracemalloc.get_traced_memory()[1] - before
            finally:
                tracemalloc.stop()
            estimate = model.training_step_bytes(N, T)
            assert 0.1 * estimate < peak < estimate, (cell, N, T, V, H, peak, estimate)
