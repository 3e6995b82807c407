"""Decoding: every loop that turns image features into captions, greedy, random sampling and beam search.

The loops see a model through one step protocol, which :class:`~captionkit.model.CaptioningRNN` implements on its
backend:

- ``decoding_start(features) -> (state, context)``: the recurrent state before the first word (a tuple of arrays
  with one row per image, h first) and the per-image context the cell reads at each step (None: none);
- ``decoding_step(words, state, context, images, k) -> (log_probs (M, k), word_ids (M, k), next state)``: for M
  rows, their last words (M,), their state (M rows) and ``images`` (M,), the image of each row (the row of
  ``context`` it reads), each row's k best next words (ties: the lower id first) with their log-probabilities;
- ``greedy_step(words, state, context, images) -> (best words (M,), next state)``: the same step ranked for its best
  word alone;
- ``sampling_step(words, state, context, images, uniforms, temperature) -> (drawn words (M,), next state)``: the
  same step with each row's word drawn from the whole softmax by inverse transform of its uniform (M,);
- ``fused_greedy(features, max_length, with_weights=False)``: a cell's compiled greedy loop in one call (the same
  captions as the step loop, faster; with the attention weights of each step for ``with_weights``), or None;
- ``map_rows(rows, task)``: the model's sharding of independent rows, and ``_check_features``, its check of the
  features, which every loop here makes once.

Beam search sees only a ``step`` function and a state: it expands, selects and reorders the state's rows (one per
hypothesis) without knowing what they mean, so it works for any cell of the registry, and it passes the step each
row's image, so per-image data (the context) is indexed, never copied per hypothesis.

How a step works, per image with beam size K: each of the K live hypotheses is extended by every word, scored by
its total log-probability (log-softmax of the model's scores, summed over the words so far). Of these candidates,
those ending in ``<END>`` that rank among the best K are set aside as finished; the best K that do not end stay
live. An image is done once K hypotheses have finished (the rule of fairseq's beam search), or at ``max_length``.
Its answer is the finished hypothesis with the best length-normalised score, or the best live one when none
finished. With K = 1 this is greedy decoding, word for word. Like every beam search it can miss the most probable
caption, and now and then return a less probable one than greedy decoding when greedy's prefix falls out of the
beam; wider beams make both rarer.

Length normalisation (Wu et al. 2016, "GNMT"): a hypothesis of L words (``<END>`` counts) with log-probability
``log P`` scores ``log P / ((5 + L) / 6) ** length_penalty``. ``length_penalty`` 0 (the default) compares plain
log-probabilities, which favours short captions; larger values (0.6 to 1 are common) favour longer ones. Only
hypotheses of different lengths are affected, so the penalty matters only when choosing among finished captions.
"""
from typing import NamedTuple

import numpy as np

from captionkit.checks import integer, number
from captionkit.vocabulary import END, NULL, START

__all__ = ["BeamSearchResult", "beam_search", "captions", "check_beam_args", "check_sampling_args", "decode", "greedy",
           "greedy_attention", "length_normalizer", "sample_words"]


class BeamSearchResult(NamedTuple):
    """captions (N, max_length) int32: word ids, the first sampled word first, ``<END>`` included, ``<NULL>`` after;
    log_probs (N,) float64: the total log-probability of each caption (of its words up to and including ``<END>``).
    """

    captions: np.ndarray
    log_probs: np.ndarray


def check_beam_args(beam_size, length_penalty):
    """Validate the search options -> (beam_size as int, length_penalty as float); ValueError names the bad one."""
    return integer("beam_size", beam_size), number("length_penalty", length_penalty)


def length_normalizer(length, length_penalty):
    """The GNMT length normaliser ``((5 + length) / 6) ** length_penalty`` that divides a log-probability."""
    return ((5.0 + length) / 6.0) ** length_penalty


def _check_state(state, what):
    if not isinstance(state, tuple) or not state or not all(isinstance(s, np.ndarray) for s in state):
        raise ValueError(f"{what} must be a non-empty tuple of arrays (h first), got {type(state).__name__}")
    rows = state[0].shape[0] if state[0].ndim else None
    if rows is None or any(s.ndim == 0 or s.shape[0] != rows for s in state):
        raise ValueError(f"{what}: every array needs the same number of rows, got shapes {[s.shape for s in state]}")
    return rows


def _check_ids(vocab_size, **ids):
    if vocab_size < 2:
        raise ValueError(f"the vocabulary must have at least 2 words, got {vocab_size}")
    for name, idx in ids.items():
        if idx is not None and not 0 <= idx < vocab_size:
            raise ValueError(f"{name} id {idx} is outside the vocabulary of {vocab_size} words")


def beam_search(step, initial_state, start, end, vocab_size, max_length=30, beam_size=1, length_penalty=0.0,
                null=0):
    """Beam search from ``initial_state`` (a tuple of arrays with N rows, h first) -> :class:`BeamSearchResult`.

    ``step(words, state, k, images) -> (log_probs, word_ids, next_state)`` takes words (M,) int64, a state of M rows,
    a count k and the image of each row (M,) int64 (hypotheses n * K to n * K + K - 1 are image n's), and returns
    for each row its k best next words: log-probabilities (M, k), best first, word ids (M, k) (ties: the lower id
    first) and the next state (M rows). ``start`` is the id fed first, ``end`` the id that ends
    a caption (None: captions only stop at ``max_length``), ``null`` the padding id, ``vocab_size`` V. See the
    module docstring for the search and ``length_penalty``. Raises ValueError for bad arguments and
    FloatingPointError when the model's log-probabilities are not finite.
    """
    beam_size, length_penalty = check_beam_args(beam_size, length_penalty)
    integer("max_length", max_length)
    _check_ids(vocab_size, start=start, end=end, null=null)
    num_images = _check_state(initial_state, "initial_state")
    K, L = beam_size, int(max_length)
    captions = np.full((num_images, L), null, dtype=np.int32)
    log_probs = np.full(num_images, -np.inf)
    if num_images == 0:
        return BeamSearchResult(captions, log_probs)

    # Row n * K + k of the state holds hypothesis k of image n. All K start as copies of the image's state; only
    # hypothesis 0 may expand at the first step (the others score -inf), so the beam does not fill with duplicates.
    # Hypotheses are reordered within their image only, so the row-to-image map stays the same throughout.
    state = tuple(np.repeat(s, K, axis=0) for s in initial_state)
    images = np.repeat(np.arange(num_images, dtype=np.int64), K)
    words = np.full(num_images * K, start, dtype=np.int64)
    totals = np.full((num_images, K), -np.inf)
    totals[:, 0] = 0.0
    sequences = np.full((num_images, K, L), null, dtype=np.int32)
    best_normalised = np.full(num_images, -np.inf)
    num_finished = np.zeros(num_images, dtype=np.int64)
    image_rows = np.arange(num_images)[:, None]
    # Each hypothesis's best K + 1 words hold its best K that are not <END>, which is all the selection below can
    # take. Ranked by score (stable, lowest id first on ties), so K = 1 picks exactly greedy decoding's word.
    per_beam = min(K + 1, vocab_size)

    for t in range(L):
        step_log_probs, top_words, state = step(words, state, per_beam, images)
        step_log_probs, top_words = np.asarray(step_log_probs), np.asarray(top_words)
        if step_log_probs.shape != (num_images * K, per_beam) or top_words.shape != step_log_probs.shape:
            raise ValueError(f"step returned log-probabilities of shape {step_log_probs.shape} and words of shape "
                             f"{top_words.shape}, expected ({num_images * K}, {per_beam}) each")
        if _check_state(state, "the state step returned") != num_images * K:
            raise ValueError(f"step returned a state with {state[0].shape[0]} rows, expected {num_images * K}")
        if not np.isfinite(step_log_probs).all():
            raise FloatingPointError(f"the model's scores at decoding step {t} are not finite (NaN or inf)")

        candidates = totals.reshape(-1, 1) + step_log_probs.astype(np.float64)
        candidates = candidates.reshape(num_images, K * per_beam)
        cand_words = top_words.reshape(num_images, K * per_beam)
        cand_parents = np.broadcast_to(np.repeat(np.arange(K), per_beam), cand_words.shape)
        order = np.argsort(-candidates, axis=1, kind="stable")
        candidates = np.take_along_axis(candidates, order, axis=1)
        cand_words = np.take_along_axis(cand_words, order, axis=1)
        cand_parents = np.take_along_axis(cand_parents, order, axis=1)

        ends = cand_words == end if end is not None else np.zeros(cand_words.shape, dtype=bool)
        finishing = ends & np.isfinite(candidates) & (np.arange(K * per_beam) < K)
        finishing &= (num_finished < K)[:, None]
        if finishing.any():
            # All finishing candidates of one image have length t + 1; the first in rank order is its best.
            normalised = np.where(finishing, candidates, -np.inf) / length_normalizer(t + 1, length_penalty)
            first = normalised.argmax(axis=1)
            better = finishing.any(axis=1) & (normalised[image_rows[:, 0], first] > best_normalised)
            n = np.flatnonzero(better)
            best_normalised[n] = normalised[n, first[n]]
            log_probs[n] = candidates[n, first[n]]
            captions[n] = sequences[n, cand_parents[n, first[n]]]  # positions t onwards are still <NULL>
            captions[n, t] = end
            num_finished += finishing.sum(axis=1)
            if (num_finished >= K).all():
                break

        # The K best candidates that do not end become the live hypotheses (there are at least K: at most K of
        # the candidates are <END>, one per hypothesis).
        keep = np.argsort(ends, axis=1, kind="stable")[:, :K]
        totals = np.take_along_axis(candidates, keep, axis=1)
        parents = np.take_along_axis(cand_parents, keep, axis=1)
        parent_rows = (image_rows * K + parents).ravel()
        sequences = sequences.reshape(num_images * K, L)[parent_rows].reshape(num_images, K, L)
        sequences[:, :, t] = np.take_along_axis(cand_words, keep, axis=1)
        state = tuple(s[parent_rows] for s in state)
        words = sequences[:, :, t].ravel().astype(np.int64)

    unfinished = num_finished == 0
    captions[unfinished] = sequences[unfinished, 0]  # live hypotheses stay sorted, so 0 is the best
    log_probs[unfinished] = totals[unfinished, 0]
    return BeamSearchResult(captions, log_probs)


def _start_ids(model, features, max_length):
    """The checks every decoding loop makes: features (N, D) as the model checks them, max_length, and a vocabulary
    with ``<START>`` -> (features, start, end or None, null)."""
    features = model._check_features(features)
    integer("max_length", max_length)
    start = model.word_to_idx.get(START)
    if start is None:
        raise ValueError("word_to_idx has no '<START>' token, which decoding needs")
    return features, start, model.word_to_idx.get(END), model.word_to_idx[NULL]


def captions(model, features, max_length=30, beam_size=1, length_penalty=0.0):
    """``CaptioningRNN.sample``: greedy decoding for ``beam_size`` 1, else beam search -> captions (N, max_length)
    int32, the first chosen word first, ``<END>`` included, ``<NULL>`` after."""
    features, *ids = _start_ids(model, features, max_length)
    beam_size, length_penalty = check_beam_args(beam_size, length_penalty)
    if beam_size > 1:
        return _beam(model, features, max_length, beam_size, length_penalty, *ids).captions
    return _greedy(model, features, max_length, *ids)


def greedy(model, features, max_length=30):
    """Greedy decoding: features (N, D) -> captions (N, max_length) int32, each step's best word.

    Once a caption has produced ``<END>`` the rest of its row stays ``<NULL>``; decoding stops early when every
    caption has ended. Rows never interact, so each of the model's shards of them decodes on its own, in one call
    of the cell's fused loop when it has one (``fused_greedy``), else step by step.
    """
    features, *ids = _start_ids(model, features, max_length)
    return _greedy(model, features, max_length, *ids)


def _greedy(model, features, max_length, start, end, null):
    if features.shape[0] == 0:
        return np.full((0, max_length), null, dtype=np.int32)

    def decode_rows(rows):
        fused = model.fused_greedy(features[rows], max_length)
        if fused is not None:
            return fused
        return _word_by_word(model, features[rows], max_length, start, end, null, model.greedy_step)

    return np.concatenate(model.map_rows(features.shape[0], decode_rows))


def _word_by_word(model, features, max_length, start, end, null, next_words, weights=None):
    """The loop of greedy decoding and sampling: from the model's start state, ``next_words(words, state, context,
    images) -> (words, state)`` picks every caption's next word; a caption's row keeps <NULL> after its <END>, and
    the loop stops once every caption has ended -> captions (N, max_length) int32. ``weights`` (N, max_length, L),
    zeros, receives each step's attention weights (of the captions still going) when given."""
    N = features.shape[0]
    captions = np.full((N, max_length), null, dtype=np.int32)
    if N == 0:
        return captions
    state, context = model.decoding_start(features)
    images = np.arange(N, dtype=np.int64)
    words = np.full(N, start, dtype=np.int64)
    alive = np.ones(N, dtype=bool)
    for t in range(max_length):
        words, state = next_words(words, state, context, images)
        captions[alive, t] = words[alive]
        if weights is not None:
            weights[alive, t] = model.attention_weights(state)[alive]
        if end is not None:
            alive &= words != end
            if not alive.any():
                break
    return captions


def greedy_attention(model, features, max_length=30):
    """Greedy decoding of an attention model with where it looked: features (N, L, D) -> (captions as
    :func:`greedy`'s, weights (N, max_length, L) float64: at step t the attention over the L regions that chose
    word t, zeros after a caption's ``<END>``). ValueError for a model without attention."""
    if model.spec.attention is None:
        raise ValueError(f"the model ({model.spec.describe()}) has no attention, so no attention weights")
    features, start, end, null = _start_ids(model, features, max_length)
    regions = model.spec.feature_shape[0]
    if features.shape[0] == 0:
        return np.full((0, max_length), null, dtype=np.int32), np.zeros((0, max_length, regions))

    def decode_rows(rows):
        fused = model.fused_greedy(features[rows], max_length, with_weights=True)
        if fused is not None:
            return fused[0], fused[1].astype(np.float64)
        weights = np.zeros((rows.stop - rows.start, max_length, regions))
        captions = _word_by_word(model, features[rows], max_length, start, end, null, model.greedy_step, weights)
        return captions, weights

    parts = model.map_rows(features.shape[0], decode_rows)
    return np.concatenate([c for c, _ in parts]), np.concatenate([w for _, w in parts])


def decode(model, features, max_length=30, beam_size=1, length_penalty=0.0):
    """Beam search with ``model`` (a CaptioningRNN) for image features (N, D) -> :class:`BeamSearchResult`.

    Runs :func:`beam_search` on the model's ``decoding_step``, which embeds the previous words, advances the cell one
    step and ranks the vocabulary from h, exactly as greedy decoding does.
    """
    features, *ids = _start_ids(model, features, max_length)
    return _beam(model, features, max_length, beam_size, length_penalty, *ids)


def _beam(model, features, max_length, beam_size, length_penalty, start, end, null):
    state, context = model.decoding_start(features)
    return beam_search(
        lambda words, state, k, images: model.decoding_step(words, state, context, images, k),
        state,
        start=start,
        end=end,
        vocab_size=model.vocab_size,
        max_length=max_length,
        beam_size=beam_size,
        length_penalty=length_penalty,
        null=null,
    )


def check_sampling_args(temperature, top_k):
    """Validate the options of random sampling -> (temperature as float, top_k as int or None)."""
    return number("temperature", temperature, above=True), integer("top_k", top_k, optional=True)


def sample_words(model, features, max_length=30, temperature=1.0, top_k=None, rng=None):
    """Captions drawn at random, word by word: features (N, D) -> captions (N, max_length) int32, laid out as
    :func:`greedy`'s.

    At each step a word is drawn with probability proportional to ``p ** (1 / temperature)`` among the ``top_k``
    most probable next words (all words when None), ``p`` being the model's softmax. ``temperature`` below 1
    sharpens the distribution towards greedy decoding, above 1 flattens it; ``top_k=1`` is greedy decoding.
    ``rng``: a ``numpy.random.Generator`` (default: a fresh one).
    """
    temperature, top_k = check_sampling_args(temperature, top_k)
    features, start, end, null = _start_ids(model, features, max_length)
    rng = np.random.default_rng() if rng is None else rng
    k = model.vocab_size if top_k is None else min(top_k, model.vocab_size)
    if k == model.vocab_size:  # the whole vocabulary: one O(V) pass per row, no ranking of the words
        def draw_any(words, state, context, images):
            return model.sampling_step(words, state, context, images, rng.random(len(words)), temperature)

        return _word_by_word(model, features, max_length, start, end, null, draw_any)

    def draw(words, state, context, images):
        log_probs, ids, state = model.decoding_step(words, state, context, images, k)
        scaled = log_probs.astype(np.float64) / temperature
        weights = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        cumulative = np.cumsum(weights, axis=1)
        draws = rng.random(len(words))[:, None] * cumulative[:, -1:]
        choice = np.minimum((cumulative <= draws).sum(axis=1), k - 1)  # inverse transform sampling
        return ids[np.arange(len(words)), choice].astype(np.int64), state

    return _word_by_word(model, features, max_length, start, end, null, draw)
