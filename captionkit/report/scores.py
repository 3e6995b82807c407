"""Per-picture scores of generated captions: CIDEr-D and sentence BLEU-4 of each picture against its references.

CIDEr-D takes its document frequencies from the references of all the pictures scored together (the corpus), as
the corpus figure of :func:`captionkit.metrics.score` does, so the mean of the per-picture CIDEr-D is that corpus
CIDEr-D, the number ``captionkit evaluate`` prints for the same images and decoding. BLEU-4 is the sentence BLEU of
one picture: the corpus BLEU of a corpus of that picture alone (the COCO toolkit's smoothing included), so it does
not average to the corpus BLEU-4, whose counts are summed over the pictures before the ratio is taken.
"""
from captionkit import metrics

__all__ = ["PICTURE_SCORES", "picture_scores"]

PICTURE_SCORES = ("CIDEr-D", "BLEU-4")  # the scores each picture gets, in the order the page shows them


def picture_scores(references, hypotheses):
    """``(per picture, corpus)`` for each image of ``hypotheses`` (image -> generated text), scored against
    ``references`` (image -> non-empty list of reference texts): per picture ``{image: {"CIDEr-D": .., "BLEU-4":
    ..}}`` with document frequencies from the references of the images of ``hypotheses``, and the corpus scores of
    :func:`captionkit.metrics.score` on the same captions. Raises ValueError as that function does."""
    corpus = metrics.score(references, hypotheses)  # also validates the input, naming the image at fault
    images = list(hypotheses)
    cider = metrics.CiderD([[metrics.tokenize(text) for text in references[image]] for image in images])
    scores = {}
    for k, image in enumerate(images):
        sentence = metrics.score({image: references[image]}, {image: hypotheses[image]})
        scores[image] = {"CIDEr-D": cider.score(k, metrics.tokenize(hypotheses[image])), "BLEU-4": sentence["BLEU-4"]}
    return scores, corpus
