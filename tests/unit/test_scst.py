"""captionkit.scst: the weighted loss seam against a numpy reference and finite differences, the baselines, per-caption
CIDEr-D against pycocoevalcap, a seeded run that raises the reward, and the options' checks."""
import numpy as np
import pytest

from captionkit import kernels, metrics, scst
from captionkit.model import CaptioningRNN
from captionkit.optim import adam

WORDS = ["<NULL>", "<START>", "<END>", "a", "cat", "dog", "sits", "runs"]
WORD_TO_IDX = {w: i for i, w in enumerate(WORDS)}
BACKENDS = ["numpy"] + (["cython"] if kernels.is_available() else [])


def tiny_model(backend, cell="rnn", seed=0, dtype=np.float64):
    return CaptioningRNN(WORD_TO_IDX, input_dim=4, wordvec_dim=3, hidden_dim=5, cell_type=cell, dtype=dtype,
                         backend=backend, seed=seed)


def sampled_batch(rng, rows=6, length=5):
    features = rng.standard_normal((rows, 4))
    captions = rng.integers(3, len(WORDS), size=(rows, length))
    captions[:, 0] = WORD_TO_IDX["<START>"]
    captions[0, 2], captions[0, 3:] = WORD_TO_IDX["<END>"], WORD_TO_IDX["<NULL>"]  # masked after <END>
    captions[3, 4] = WORD_TO_IDX["<END>"]
    return features, captions, rng.standard_normal(rows)


def reference_loss(model, features, captions, weights):
    """-sum_n A_n sum_t log p(w_{n,t}) / N in numpy, from the per-caption log-likelihoods."""
    return float(np.sum(weights * model.caption_nll(features, captions)) / len(weights))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_weighted_loss_equals_reference_and_finite_differences(backend, cell):
    rng = np.random.default_rng(3)
    model = tiny_model(backend, cell)
    features, captions, weights = sampled_batch(rng)
    loss, grads = model.loss(features, captions, row_weights=weights)
    assert loss == pytest.approx(reference_loss(model, features, captions, weights), rel=1e-10)
    for name in ("W_vocab", "b_vocab", "W_embed", "W_proj", model.cell_param_names[0]):
        value = model.params[name]
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            old = value[index]
            value[index] = old + 1e-6
            plus = reference_loss(model, features, captions, weights)
            value[index] = old - 1e-6
            minus = reference_loss(model, features, captions, weights)
            value[index] = old
            numeric[index] = (plus - minus) / 2e-6
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.skipif(not kernels.is_available(), reason="the compiled kernels are not built")
def test_compiled_weighted_loss_equals_numpy_in_float32():
    rng = np.random.default_rng(4)
    features, captions, weights = sampled_batch(rng, rows=9)
    numpy_model, compiled = tiny_model("numpy", dtype=np.float32), tiny_model("cython", dtype=np.float32)
    expected = numpy_model.loss(features.astype(np.float32), captions, row_weights=weights)
    got = compiled.loss(features.astype(np.float32), captions, row_weights=weights)
    assert got[0] == pytest.approx(expected[0], rel=1e-5)
    for name, grad in expected[1].items():
        np.testing.assert_allclose(got[1][name], grad, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_baseline_equal_to_reward_gives_zero_gradient(backend):
    rng = np.random.default_rng(5)
    model = tiny_model(backend)
    features, captions, _ = sampled_batch(rng)
    rewards = rng.random((3, 2))
    weights = scst.advantages(rewards, "greedy", greedy_rewards=rewards[:, 0].copy())
    weights[:, 1] = scst.advantages(rewards[:, 1:], "greedy", greedy_rewards=rewards[:, 1].copy())[:, 0]
    loss, grads = model.loss(features, captions, row_weights=weights.ravel())
    assert loss == 0.0
    assert all(not grad.any() for grad in grads.values())


def test_advantages_of_both_baselines():
    rewards = np.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    np.testing.assert_allclose(scst.advantages(rewards, "greedy", np.array([2.0, 1.0])),
                               [[-1.0, 0.0, 4.0], [-1.0, -1.0, 2.0]])
    np.testing.assert_allclose(scst.advantages(rewards, "mean"), [[-3.0, -1.5, 4.5], [-1.5, -1.5, 3.0]])


def test_per_caption_cider_d_equals_pycocoevalcap():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    rng = np.random.default_rng(6)
    refs = [[" ".join(rng.choice(WORDS[3:], size=rng.integers(2, 7))) for _ in range(3)] for _ in range(8)]
    hyps = [" ".join(rng.choice(WORDS[3:], size=rng.integers(1, 7))) for _ in range(8)]
    oracle = CiderScorer(n=4, sigma=6.0)
    for hyp, image_refs in zip(hyps, refs):
        oracle += (hyp, image_refs)
    _, expected = oracle.compute_score()
    scorer = metrics.CiderD([[r.split() for r in image_refs] for image_refs in refs])
    got = [scorer.score(i, hyp.split()) for i, hyp in enumerate(hyps)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_caption_tokens_stop_at_end_and_drop_the_special_words():
    assert scst.caption_tokens([1, 3, 0, 4, 2, 5], start=1, end=2, null=0) == (3, 4)
    refs = scst.training_references([[1, 4, 5, 2], [1, 3, 2, 0], [1, 6, 2, 0]], [3, 3, 1], start=1, end=2, null=0)
    assert refs == {1: [(6,)], 3: [(4, 5), (3,)]} and list(refs) == [1, 3]


@pytest.mark.parametrize("baseline", scst.BASELINES)
def test_scst_raises_the_training_reward(baseline):
    """On a tiny dataset where each image has one caption, seeded SCST steps raise the mean sampled reward."""
    rng = np.random.default_rng(7)
    model = tiny_model(BACKENDS[-1], seed=1)
    features = rng.standard_normal((4, 4))
    references = {0: [(3, 4, 6)], 1: [(3, 5, 7)], 2: [(3, 4, 7)], 3: [(3, 5, 6)]}
    objective = scst.SelfCritical(model, references, samples=8, baseline=baseline, max_length=5)
    configs, means = {}, []
    for _ in range(90):
        _, grads, reward, _ = objective.loss(features, np.arange(4), rng)
        means.append(reward)
        for name, grad in grads.items():
            model.params[name], configs[name] = adam(model.params[name], grad,
                                                     configs.get(name, {"learning_rate": 2e-2}))
    thirds = np.array(means).reshape(3, 30).mean(axis=1)
    assert thirds[0] < thirds[1] < thirds[2] and thirds[2] > thirds[0] + 0.4


@pytest.mark.parametrize("samples, baseline, message", [
    (0, "greedy", "samples must be a positive integer, got 0"),
    (1, "mean", "samples must be at least 2 with baseline 'mean'"),
    (5, "beam", "baseline must be one of greedy, mean, got 'beam'"),
    (2.5, "greedy", "samples"),
])
def test_bad_options_are_refused(samples, baseline, message):
    with pytest.raises((ValueError, TypeError), match=message):
        scst.SelfCritical(tiny_model("numpy"), {0: [(3,)]}, samples=samples, baseline=baseline)


def test_row_weights_of_the_wrong_shape_are_refused():
    features, captions, weights = sampled_batch(np.random.default_rng(8))
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=r"row_weights must have shape \(6,\)"):
            tiny_model(backend).loss(features, captions, row_weights=weights[:4])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_step_draws_by_inverse_transform(backend, temperature):
    """Each drawn word v satisfies P(< v) <= u < P(<= v) under the tempered softmax, its log-probability is log p(v),
    and the empirical frequencies of many draws follow p."""
    from captionkit.backend import ops

    rng = np.random.default_rng(9)
    h, w, b = rng.standard_normal((4000, 5)), rng.standard_normal((5, 8)), rng.standard_normal(8)
    uniforms = rng.random(4000)
    ids, log_probs = ops(backend).affine_sample(h, w, b, uniforms, temperature)
    scores = (h @ w + b) / temperature
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    upper = np.cumsum(p, axis=1)[np.arange(4000), ids]
    assert np.all(upper - p[np.arange(4000), ids] <= uniforms + 1e-12) and np.all(uniforms < upper + 1e-12)
    np.testing.assert_allclose(log_probs, np.log(p[np.arange(4000), ids]), rtol=1e-9)
    same_h = ops(backend).affine_sample(np.repeat(h[:1], 4000, axis=0), w, b, uniforms, temperature)[0]
    np.testing.assert_allclose(np.bincount(same_h, minlength=8) / 4000, p[0], atol=0.03)


@pytest.mark.skipif(not kernels.is_available(), reason="the compiled kernels are not built")
def test_compiled_sampling_refuses_bad_uniforms_and_temperature():
    h, w, b = np.ones((2, 3)), np.ones((3, 4)), np.ones(4)
    with pytest.raises(ValueError, match=r"uniforms must be 2 floats in \[0, 1\)"):
        kernels.affine_sample(h, w, b, np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="temperature"):
        kernels.affine_sample(h, w, b, np.array([0.5, 0.2]), temperature=0.0)
