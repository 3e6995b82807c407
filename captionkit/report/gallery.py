"""The gallery's data: one row per picture, with each run's caption of it, that caption's scores and, for an
attention model decoding greedily, where the model looked for each word.

Runs are aligned by picture: every run captions the same images of the same split, so a row holds one caption per
run, in the runs' order, and the difference of their scores. Rows start worst first by the first run's CIDEr-D,
the order error analysis reads them in; the page sorts them again on any score.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from captionkit.captioning import attended_captions
from captionkit.evaluation import (DEFAULT_BATCH_SIZE, default_max_length, caption_text, generate_captions,
                                   perplexity, references_by_image, split_images)
from captionkit.metrics import tokenize
from captionkit.report.scores import picture_scores

__all__ = ["Caption", "Picture", "RunCaptions", "caption_split", "difference", "split_gallery", "worst_first"]


@dataclass
class Caption:
    """One run's caption of one picture: its ``text`` (None when the picture could not be read: ``error`` says why),
    its ``scores`` (``{"CIDEr-D", "BLEU-4"}``; empty without references) and, for an attention model, its ``words``
    and ``attention`` (one row of L region weights per word)."""

    text: str | None
    scores: dict = field(default_factory=dict)
    words: list | None = None
    attention: np.ndarray | None = None
    error: str | None = None


@dataclass
class Picture:
    """One row of the gallery: the picture's ``name`` (as shown), its reference captions, one :class:`Caption` per
    run, and where the page finds the picture (a :class:`captionkit.report.pictures.PictureFile`)."""

    name: str
    references: list
    captions: list
    file: object = None

    def words(self):
        """The words of its captions and references, as the page's word filter matches them (sorted, once each)."""
        texts = [caption.text for caption in self.captions if caption.text] + list(self.references)
        return sorted({word for text in texts for word in tokenize(text)})


@dataclass
class RunCaptions:
    """A run's captions of a split's images (in image order) and its corpus scores over them: ``corpus`` as
    :func:`captionkit.metrics.score` gives them, with ``perplexity`` of the references."""

    captions: list
    corpus: dict


def _decoded(model, features, max_length, beam_size, batch_size, progress):
    """[Caption] of each feature row: with the attention weights when the model has attention and decodes greedily
    (the weights belong to greedy decoding), else the text alone."""
    if model.spec.attention is not None and beam_size == 1:
        entries = attended_captions(model, features, max_length, batch_size, progress)
        return [Caption(entry["caption"], words=entry["words"], attention=entry["attention"]) for entry in entries]
    ids = generate_captions(model, features, max_length, beam_size=beam_size, batch_size=batch_size,
                            progress=progress)
    return [Caption(caption_text(row, model.idx_to_word)) for row in ids]


def caption_split(model, data, split, images, references, beam_size=1, batch_size=DEFAULT_BATCH_SIZE,
                  progress=None):
    """:class:`RunCaptions` of ``model`` on ``images`` (indices of ``split`` of ``data``, each with references in
    ``references``): captions decoded as ``captionkit evaluate`` decodes them (same default length), each scored
    (:func:`captionkit.report.scores.picture_scores`). The data is checked against the model first (ValueError
    naming what does not fit), by the perplexity of the references, which the corpus scores include."""
    ppl = perplexity(model, data, split, images, batch_size)
    captions = _decoded(model, data[f"{split}_features"][images], default_max_length(data, split, None),
                        beam_size, batch_size, progress)
    scores, corpus = picture_scores(references, {int(i): c.text for i, c in zip(images, captions)})
    for image, caption in zip(images, captions):
        caption.scores = scores[int(image)]
    return RunCaptions(captions, {**corpus, "perplexity": ppl["perplexity"]})


def split_gallery(models, data, split="val", max_images=None, beam_size=1, batch_size=DEFAULT_BATCH_SIZE,
                  progress=None):
    """``(images, pictures, runs)``: the image indices of ``split`` shown (the first ``max_images`` with reference
    captions, as ``captionkit evaluate --max-images`` scores them), a :class:`Picture` for each (not yet sorted) and
    the :class:`RunCaptions` of each model of ``models``."""
    chosen = split_images(data, split, max_images)
    references = {i: refs for i, refs in references_by_image(data, split, chosen).items() if refs}
    if not references:
        raise ValueError(f"the {split} images have no non-empty ground-truth captions to score against")
    images = np.array(sorted(references))
    runs = [caption_split(model, data, split, images, references, beam_size, batch_size, progress)
            for model in models]
    pictures = [Picture(f"{split} image {image}", references[int(image)], [run.captions[k] for run in runs])
                for k, image in enumerate(images)]
    return images, pictures, runs


def difference(picture, metric="CIDEr-D"):
    """The score difference of a row: the second run's ``metric`` minus the first's with two runs, the highest
    minus the lowest with more (how far apart the runs are); None with one run or a caption unscored."""
    values = [caption.scores.get(metric) for caption in picture.captions]
    if len(values) < 2 or any(value is None for value in values):
        return None
    return values[1] - values[0] if len(values) == 2 else max(values) - min(values)


def worst_first(pictures, metric="CIDEr-D"):
    """The rows sorted by the first run's ``metric``, lowest first (rows without that score last, in their order)."""
    def key(position):
        value = pictures[position].captions[0].scores.get(metric)
        return (value is None or math.isnan(value), value if value is not None else 0.0, position)

    return [pictures[position] for position in sorted(range(len(pictures)), key=key)]
