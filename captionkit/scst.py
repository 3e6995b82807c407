"""Self-critical sequence training (SCST, Rennie et al. 2017): fine-tuning a captioner on CIDEr-D itself.

For each image the model draws K captions by sampling (temperature 1), each is scored against the image's reference
captions with CIDEr-D (:class:`captionkit.metrics.CiderD`, document frequencies of the training references computed
once), and its advantage is its reward minus a baseline: the score of the image's greedy caption (Rennie et al.,
``"greedy"``) or the mean score of the image's other K - 1 samples (the "new self-critical" variant, ``"mean"``).
The loss is ``-sum_n A_n sum_t log p(w_{n,t})`` over the sampled words up to and including ``<END>``, divided by the
number of sampled captions.

Its gradient is the model's own masked cross-entropy with the sampled words as targets, each caption weighted by
its advantage, so SCST runs through :meth:`CaptioningRNN.loss` with ``row_weights``: the same forward and backward
of every cell, on either backend (the compiled output layer multiplies each row's softmax gradient by its weight).
"""
import numpy as np

from captionkit import decoding, optim
from captionkit.checks import integer
from captionkit.metrics import CiderD
from captionkit.solver import CaptioningSolver
from captionkit.vocabulary import END, NULL, START

__all__ = ["BASELINES", "SelfCritical", "SelfCriticalSolver", "advantages", "caption_tokens", "training_references"]

BASELINES = ("greedy", "mean")
# The first numbers of the seed of each iteration's sampling generator, apart from the run's other seeded streams.
_SAMPLING_STREAM = 21


def caption_tokens(row, start, end, null):
    """The words of a caption of ids, as CIDEr-D reads them: up to its first ``<END>``, without ``<START>`` and
    ``<NULL>`` -> tuple of ints."""
    words = []
    for word in np.asarray(row).tolist():
        if word == end:
            break
        if word != start and word != null:
            words.append(word)
    return tuple(words)


def training_references(captions, image_idxs, start, end, null):
    """``{image: [token tuple of each of its captions]}`` for the images that have captions (dataset layout: rows of
    ids, ``<START>`` first; ``image_idxs`` the image of each row), in order of image."""
    references = {}
    for row, image in zip(np.asarray(captions), np.asarray(image_idxs).tolist()):
        references.setdefault(image, []).append(caption_tokens(row, start, end, null))
    return dict(sorted(references.items()))


def check_options(samples, baseline):
    """Validate SCST's options -> (samples as int >= 2 for the mean baseline, >= 1 otherwise; baseline)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    samples = integer("samples", samples)
    least = 2 if baseline == "mean" else 1
    if samples < least:
        raise ValueError(f"samples must be at least {least} with baseline {baseline!r}, got {samples}")
    return samples, baseline


def advantages(rewards, baseline, greedy_rewards=None):
    """Rewards (N, K) of K samples per image -> advantages (N, K) float64: minus the greedy caption's reward
    ``greedy_rewards`` (N,) for ``"greedy"``, minus the mean of the image's other samples for ``"mean"``."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must have shape (N, K), got {rewards.shape}")
    if baseline == "greedy":
        greedy_rewards = np.asarray(greedy_rewards, dtype=np.float64)
        if greedy_rewards.shape != rewards.shape[:1]:
            raise ValueError(f"greedy_rewards must have shape ({rewards.shape[0]},), got {greedy_rewards.shape}")
        return rewards - greedy_rewards[:, None]
    if baseline == "mean":
        K = rewards.shape[1]
        if K < 2:
            raise ValueError("the mean baseline needs at least 2 samples per image")
        return rewards - (rewards.sum(axis=1, keepdims=True) - rewards) / (K - 1)
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")


class SelfCritical:
    """The SCST objective of one model on one set of references.

    ``references``: ``{image: its reference token tuples}`` (:func:`training_references`); CIDEr-D's document
    frequencies come from them, once, over these images only. ``samples`` K captions per image, ``baseline`` one of
    :data:`BASELINES`, ``max_length`` the longest sampled caption.
    """

    def __init__(self, model, references, samples=5, baseline="greedy", max_length=16):
        self.samples, self.baseline = check_options(samples, baseline)
        self.max_length = integer("max_length", max_length)
        self.model = model
        ids = model.word_to_idx
        self._ids = (ids.get(START), ids.get(END), ids[NULL])
        self._row = {image: row for row, image in enumerate(references)}  # image -> its row of the scorer
        self.scorer = CiderD(list(references.values()))

    def rewards(self, captions, images):
        """CIDEr-D (N,) float64 of captions (N, L) of ids (decoding's layout) against images (N,)'s references."""
        return np.array([self.scorer.score(self._row[image], caption_tokens(row, *self._ids))
                         for row, image in zip(captions, np.asarray(images).tolist())])

    def loss(self, features, images, rng):
        """SCST loss and gradients for a minibatch: features (N, D) of images (N,) (rows of the references),
        ``rng`` a numpy Generator -> (loss, grads, mean sampled reward, mean greedy reward or None)."""
        model, K = self.model, self.samples
        features = np.asarray(features)
        images = np.asarray(images)
        repeated = np.repeat(features, K, axis=0)
        sampled = decoding.sample_words(model, repeated, self.max_length, temperature=1.0, rng=rng)
        rewards = self.rewards(sampled, np.repeat(images, K)).reshape(-1, K)
        greedy_rewards = None
        if self.baseline == "greedy":
            greedy_rewards = self.rewards(decoding.greedy(model, features, self.max_length), images)
        weights = advantages(rewards, self.baseline, greedy_rewards).ravel()
        start = np.full((sampled.shape[0], 1), self._ids[0], dtype=sampled.dtype)
        loss, grads = model.loss(repeated, np.hstack([start, sampled]), row_weights=weights)
        return loss, grads, float(rewards.mean()), None if greedy_rewards is None else float(greedy_rewards.mean())


class SelfCriticalSolver(CaptioningSolver):
    """The solver of an SCST run: each iteration draws ``batch_size`` training images (with replacement, from the
    solver's seeded stream, so a resumed run draws the same ones), samples ``samples`` captions per image from a
    generator seeded by ``(seed, iteration)`` (nothing more to save for a bit-identical resume), and applies the
    update rule to :meth:`SelfCritical.loss`'s gradients. The other arguments are :class:`CaptioningSolver`'s."""

    def __init__(self, model, data, *, samples, baseline, seed, **kwargs):
        super().__init__(model, data, **kwargs)
        ids = model.word_to_idx
        image_idxs = np.asarray(data["train_image_idxs"])
        references = training_references(data["train_captions"], image_idxs, ids.get(START), ids.get(END), ids[NULL])
        self.objective = SelfCritical(model, references, samples, baseline,
                                      max_length=data["train_captions"].shape[1] - 1)
        self._images = np.array(list(references))  # the images that have references
        self._seed = integer("seed", seed, minimum=0)
        self.reward_history = []

    def _step(self):
        images = self._images[self._sampling_rng().randint(len(self._images), size=self.batch_size)]
        sampling = np.random.default_rng([self._seed, _SAMPLING_STREAM, self.iteration])
        loss, grads, reward, _ = self.objective.loss(self.data["train_features"][images], images, sampling)
        self._check_finite(loss, grads)
        self.loss_history.append(loss)
        self.reward_history.append(reward)
        optim.update_all(self.update_rule, self.model.params, grads, self.optim_configs)
        return loss
