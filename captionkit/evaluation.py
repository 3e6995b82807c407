"""Evaluating a captioning model on a split of a dataset: per-word perplexity and corpus caption metrics.

- Perplexity: ``exp(total NLL / number of target words)`` of the split's ground-truth captions under the model
  (teacher forcing, as in training: :meth:`captionkit.CaptioningRNN.caption_nll`): every word after ``<START>`` is
  a target, ``<END>`` included, ``<NULL>`` padding excluded. Lower is better; a model that guesses uniformly scores
  the vocabulary size.
- Caption metrics (:func:`captionkit.metrics.score`): one generated caption per image (greedy or beam search),
  scored against all the image's ground-truth captions. Captions are compared as text without ``<START>``,
  ``<END>`` and ``<NULL>``.

``data`` is the dictionary of :func:`captionkit.data.load_coco_data`; the model must use its vocabulary and feature
width. Library functions report progress through ``progress(stage, done, total)`` and print nothing.
"""
import numpy as np

from captionkit import decoding, metrics, vocabulary
from captionkit.checks import integer
from captionkit.data import SPLITS
from captionkit.spec import SpecMismatch

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "caption_text",
    "default_max_length",
    "evaluate",
    "generate_captions",
    "perplexity",
    "references_by_image",
    "sample_captions",
    "split_images",
]

DEFAULT_BATCH_SIZE = 256


def caption_text(ids, idx_to_word):
    """Word ids of one caption (T,) -> its words joined by spaces, without ``<NULL>``/``<START>``, stopping at
    ``<END>``: the text that is scored (:func:`captionkit.vocabulary.caption_text`, boundaries dropped)."""
    return vocabulary.caption_text(ids, idx_to_word, keep_boundaries=False)


def _check_data(model, data, split):
    """Raise ValueError unless ``data`` has ``split`` and fits the model's vocabulary and feature width."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    present = [s for s in SPLITS if f"{s}_captions" in data]
    if split not in present and present:
        raise ValueError(f"the dataset has no {split} split (it has {', '.join(present)})")
    for key in (f"{split}_captions", f"{split}_image_idxs", f"{split}_features", "word_to_idx", "idx_to_word"):
        if key not in data:
            raise ValueError(f"data has no {key!r}; pass the dictionary that load_coco_data returns")
    hints = {"vocabulary": "evaluate the model on the dataset it was trained on",
             "feature_shape": "was it trained on the other feature set (PCA or not)?"}
    try:
        own_words = [model.idx_to_word.get(i) for i in range(model.vocab_size)]
        model.spec.fits(words=data["idx_to_word"], own_words=own_words,
                        feature_shape=data[f"{split}_features"].shape[1:], features=f"the {split} features")
    except SpecMismatch as exc:
        raise ValueError(f"{exc}; {hints[exc.field]}") from None


def split_images(data, split="val", max_images=None):
    """Sorted indices of the images of ``split`` that have captions; the first ``max_images`` of them if given."""
    max_images = integer("max_images", max_images, optional=True)
    images = np.unique(data[f"{split}_image_idxs"])
    if images.size == 0:
        raise ValueError(f"the {split} split has no captions to evaluate")
    return images[:max_images]


def references_by_image(data, split, images):
    """``{image index: [caption text, ...]}`` of every ground-truth caption of ``images``; empty captions dropped."""
    references = {int(i): [] for i in images}
    chosen = np.isin(data[f"{split}_image_idxs"], images)
    for row, image in zip(data[f"{split}_captions"][chosen], data[f"{split}_image_idxs"][chosen]):
        text = caption_text(row, data["idx_to_word"])
        if text:
            references[int(image)].append(text)
    return references


def perplexity(model, data, split="val", images=None, batch_size=DEFAULT_BATCH_SIZE, progress=None):
    """Per-word perplexity of the ground-truth captions of ``images`` (default: all of the split).

    Returns ``{"perplexity", "nll" (total, nats), "tokens" (target words counted), "captions"}``.
    """
    _check_data(model, data, split)
    batch_size = integer("batch_size", batch_size)
    image_idxs = data[f"{split}_image_idxs"]
    rows = np.flatnonzero(np.isin(image_idxs, split_images(data, split) if images is None else images))
    captions, features = data[f"{split}_captions"], data[f"{split}_features"]
    total_nll, tokens = 0.0, 0
    for start in range(0, rows.size, batch_size):
        batch = rows[start:start + batch_size]
        total_nll += float(model.caption_nll(features[image_idxs[batch]], captions[batch]).sum())
        tokens += int(np.count_nonzero(captions[batch, 1:] != model.word_to_idx[vocabulary.NULL]))
        if progress is not None:
            progress("perplexity", min(start + batch_size, rows.size), rows.size)
    if tokens == 0:
        raise ValueError(f"the {split} captions have no words to score")
    return {"perplexity": float(np.exp(total_nll / tokens)), "nll": total_nll, "tokens": tokens,
            "captions": int(rows.size)}


def generate_captions(model, features, max_length, beam_size=1, length_penalty=0.0, batch_size=DEFAULT_BATCH_SIZE,
                      progress=None):
    """``model.sample`` over features (N, D) in batches -> captions (N, max_length) int32."""
    batch_size = integer("batch_size", batch_size)
    out = []
    for start in range(0, features.shape[0], batch_size):
        out.append(model.sample(features[start:start + batch_size], max_length=max_length, beam_size=beam_size,
                                length_penalty=length_penalty))
        if progress is not None:
            progress("captions", min(start + batch_size, features.shape[0]), features.shape[0])
    return np.concatenate(out) if out else np.zeros((0, max_length), dtype=np.int32)


def default_max_length(data, split, max_length):
    """The split's longest possible caption (its width minus <START>) unless ``max_length`` is given."""
    if max_length is None:
        return data[f"{split}_captions"].shape[1] - 1
    return integer("max_length", max_length)


def evaluate(model, data, split="val", beam_size=1, max_images=None, batch_size=DEFAULT_BATCH_SIZE, max_length=None,
             length_penalty=0.0, progress=None):
    """Perplexity and corpus caption metrics of ``model`` on ``split`` of ``data``.

    ``max_images`` limits the evaluation to the first N images of the split (by index), for both perplexity and
    metrics. Captions are generated with ``beam_size`` (1: greedy) and ``length_penalty`` (see
    :mod:`captionkit.decoding`), at most ``max_length`` words (default: the split's caption width minus one).

    Returns ``{"split", "images", "captions", "tokens", "beam_size", "length_penalty", "max_length", "perplexity",
    "BLEU-1".."BLEU-4", "CIDEr-D", "ROUGE-L"}``; CIDEr-D is the raw value (not x100). Images whose ground-truth
    captions are all empty count for perplexity only.
    """
    _check_data(model, data, split)
    images = split_images(data, split, max_images)
    max_length = default_max_length(data, split, max_length)
    ppl = perplexity(model, data, split, images, batch_size, progress)

    references = {i: refs for i, refs in references_by_image(data, split, images).items() if refs}
    if not references:
        raise ValueError(f"the {split} images have no non-empty ground-truth captions to score against")
    scored = np.array(sorted(references))
    captions = generate_captions(model, data[f"{split}_features"][scored], max_length, beam_size, length_penalty,
                                 batch_size, progress)
    hypotheses = {int(i): caption_text(row, data["idx_to_word"]) for i, row in zip(scored, captions)}
    return {
        "split": split,
        "images": int(scored.size),
        "captions": ppl["captions"],
        "tokens": ppl["tokens"],
        "beam_size": beam_size,
        "length_penalty": float(length_penalty),
        "max_length": max_length,
        "perplexity": ppl["perplexity"],
        **metrics.score(references, hypotheses),
    }


def sample_captions(model, data, split="val", num=8, beam_size=1, seed=None, max_length=None, length_penalty=0.0,
                    temperature=None, top_k=None):
    """Generated and ground-truth captions of ``num`` images of ``split`` drawn without replacement.

    ``seed`` (an int, or None for fresh randomness) picks the images and, when sampling, the words. Captions are
    decoded greedily or by beam search (``beam_size``), or drawn at random when ``temperature`` or ``top_k`` is
    given (:func:`captionkit.decoding.sample_words`; temperature 1 by default then). Returns a list of
    ``{"image", "url", "generated", "references"}`` sorted by image index; ``url`` is None when the data has none.
    """
    _check_data(model, data, split)
    num = integer("num", num)
    candidates = split_images(data, split)
    images = np.sort(np.random.RandomState(seed).choice(candidates, size=min(num, candidates.size), replace=False))
    max_length = default_max_length(data, split, max_length)
    features = data[f"{split}_features"][images]
    if temperature is not None or top_k is not None:
        if beam_size != 1:
            raise ValueError("sampling at random (temperature, top_k) and beam search (beam_size > 1) exclude each "
                             "other")
        captions = decoding.sample_words(model, features, max_length, 1.0 if temperature is None else temperature,
                                         top_k, np.random.default_rng(seed))
    else:
        captions = model.sample(features, max_length=max_length, beam_size=beam_size, length_penalty=length_penalty)
    references = references_by_image(data, split, images)
    urls = data.get(f"{split}_urls")
    return [
        {"image": int(i), "url": None if urls is None else str(urls[i]),
         "generated": caption_text(row, data["idx_to_word"]), "references": references[int(i)]}
        for i, row in zip(images, captions)
    ]
