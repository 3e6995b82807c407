"""CaptioningRNN over grids of image regions: pooled by their mean, or read through soft attention at every step.

Oracles: centred finite differences of the whole loss (caption loss plus the doubly stochastic penalty) in float64
for every parameter; the pooled vector model fed the grid's mean; the penalty written out as loops; decoding's step
loop against the training forward; a checkpoint's round trip.
"""
import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.attention import doubly_stochastic_penalty
from captionkit.cells import available_cells
from captionkit.checkpoint_schema import read_checkpoint, save_checkpoint
from captionkit.gradient_check import eval_numerical_gradient
from captionkit.loading import build_model

WORDS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "red", "blue", "circle", "square"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
N, L, D, W, H, A = 3, 4, 5, 4, 6, 7


def _captions(rng, n, T=5):
    captions = rng.randint(3, len(WORDS), size=(n, T))
    captions[:, 0] = VOCAB["<START>"]
    captions[0, 3:] = VOCAB["<NULL>"]  # a short caption: masked steps must count for nothing, penalty included
    return captions


def _model(cell_type, **kwargs):
    if cell_type not in available_cells():
        pytest.skip(f"cell {cell_type!r} is not installed")
    return CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64,
                         backend="numpy", seed=0, regions=L, **kwargs)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
def test_attention_model_gradients_match_finite_differences(cell_type):
    model = _model(cell_type, attention="soft", attention_dim=A, attention_penalty=0.7)
    rng = np.random.RandomState(4)
    model.params = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in model.params.items()}
    features, captions = rng.standard_normal((N, L, D)), _captions(rng, N)
    loss, grads = model.loss(features, captions)
    assert set(grads) == set(model.params)
    for name, value in model.params.items():
        numeric = eval_numerical_gradient(lambda _: model.loss(features, captions)[0], value, verbose=False)
        scale = max(np.abs(numeric).max(), 1e-3)
        assert np.abs(grads[name] - numeric).max() <= 1e-7 * scale, name


def test_penalty_is_the_written_out_sum_and_its_gradient():
    rng = np.random.RandomState(5)
    alphas = rng.dirichlet(np.ones(L), size=(N, 6))
    mask = rng.rand(N, 6) > 0.3
    penalty, dalphas = doubly_stochastic_penalty(alphas, mask, 1.5, batch=10)
    expected = 0.0
    for n in range(N):
        for l in range(L):
            expected += (1 - sum(alphas[n, t, l] for t in range(6) if mask[n, t])) ** 2
    assert penalty == pytest.approx(1.5 * expected / 10, rel=1e-12)
    numeric = eval_numerical_gradient(lambda a: doubly_stochastic_penalty(a, mask, 1.5, 10)[0], alphas.copy(),
                                      verbose=False)
    np.testing.assert_allclose(dalphas, numeric, rtol=1e-6, atol=1e-10)


def test_pooled_grid_model_is_the_vector_model_of_the_mean():
    rng = np.random.RandomState(6)
    features, captions = rng.standard_normal((N, L, D)), _captions(rng, N)
    grid = _model("rnn")
    vector = CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, dtype=np.float64, backend="numpy",
                           seed=0)
    assert grid.params.keys() == vector.params.keys()
    loss, grads = grid.loss(features, captions)
    loss_mean, grads_mean = vector.loss(features.mean(axis=1), captions)
    assert loss == pytest.approx(loss_mean, rel=1e-13)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_mean[name], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(grid.sample(features), vector.sample(features.mean(axis=1)))


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_greedy_decoding_follows_the_training_forward(cell_type):
    """Greedy captions re-scored by teacher forcing: each chosen word is the argmax of the forward's scores."""
    model = _model(cell_type, attention="soft")
    rng = np.random.RandomState(7)
    model.params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in model.params.items()}
    features = rng.standard_normal((N, L, D))
    captions = model.sample(features, max_length=6)
    assert captions.shape == (N, 6)
    assert np.array_equal(model.sample(features, max_length=6, beam_size=1), captions)
    full = np.concatenate([np.full((N, 1), VOCAB["<START>"]), captions], axis=1)
    h = model._hidden_states(features, full[:, :-1])[2]
    scores = h @ model.params["W_vocab"] + model.params["b_vocab"]
    for n in range(N):
        for t in range(6):
            assert scores[n, t].argmax() == captions[n, t]
            if captions[n, t] == VOCAB["<END>"]:
                break


def test_decoding_state_carries_weights_that_sum_to_one():
    model = _model("rnn", attention="soft")
    features = np.random.RandomState(8).standard_normal((N, L, D))
    state, context = model.decoding_start(features)
    words = np.full(N, VOCAB["<START>"])
    _, state = model.greedy_step(words, state, context, np.arange(N))
    weights = model.attention_weights(state)
    assert weights.shape == (N, L)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)


def test_checkpoint_round_trip_keeps_the_attention(tmp_path):
    model = _model("rnn", attention="soft", attention_dim=A)
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "att.npz", model))
    assert checkpoint.spec == model.spec and checkpoint.spec.attention == "soft"
    rebuilt = build_model(checkpoint)
    features = np.random.RandomState(9).standard_normal((N, L, D))
    np.testing.assert_array_equal(rebuilt.sample(features), model.sample(features))


def test_bad_attention_arguments_are_named():
    with pytest.raises(ValueError, match=r"needs a grid of features, feature_shape \(L, D\)"):
        CaptioningRNN(VOCAB, input_dim=D, attention="soft")
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        CaptioningRNN(VOCAB, input_dim=D, regions=L, attention="nope")
    with pytest.raises(ValueError, match="attention_penalty"):
        CaptioningRNN(VOCAB, input_dim=D, regions=L, attention="soft", attention_penalty=-1)
    with pytest.raises(ValueError, match=r"features must have shape \(N, 4, 5\)"):
        _model("rnn", attention="soft").loss(np.zeros((N, D)), np.ones((N, 3), dtype=int))


def test_greedy_attention_gives_the_captions_and_the_weights_of_each_word():
    from captionkit.decoding import greedy_attention

    model = _model("lstm", attention="soft")
    rng = np.random.RandomState(10)
    model.params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in model.params.items()}
    features = rng.standard_normal((N, L, D))
    captions, weights = greedy_attention(model, features, max_length=6)
    np.testing.assert_array_equal(captions, model.sample(features, max_length=6))
    full = np.concatenate([np.full((N, 1), VOCAB["<START>"]), captions], axis=1)
    cache = model._hidden_states(features, full[:, :-1])[3]
    forward_weights = model.cell.attention_weights(cache)
    for n in range(N):
        length = next((t + 1 for t in range(6) if captions[n, t] == VOCAB["<END>"]), 6)
        np.testing.assert_allclose(weights[n, :length], forward_weights[n, :length], rtol=1e-12, atol=1e-14)
        assert not weights[n, length:].any()
    with pytest.raises(ValueError, match="has no attention"):
        greedy_attention(_model("rnn"), features)


def test_weighted_loss_of_an_attention_model_has_no_penalty_and_vanishes_with_zero_weights():
    """SCST's loss (row_weights) through an attention model: zero weights give zero gradients, and weights of one
    give the caption loss without the penalty (the penalty weight does not change it)."""
    rng = np.random.RandomState(11)
    features, captions = rng.standard_normal((N, L, D)), _captions(rng, N)
    with_penalty = _model("lstm", attention="soft", attention_penalty=5.0)
    without = _model("lstm", attention="soft", attention_penalty=0.0)
    loss, grads = with_penalty.loss(features, captions, row_weights=np.zeros(N))
    assert loss == 0 and all(not g.any() for g in grads.values())
    weighted, weighted_grads = with_penalty.loss(features, captions, row_weights=np.ones(N))
    plain, plain_grads = without.loss(features, captions)
    assert weighted == pytest.approx(plain, rel=1e-12)
    for name in plain_grads:
        np.testing.assert_allclose(weighted_grads[name], plain_grads[name], rtol=1e-10, atol=1e-14)
