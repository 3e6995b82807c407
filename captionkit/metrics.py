"""Corpus-level caption metrics: BLEU-1..4, CIDEr-D and ROUGE-L.

Written from the published definitions (Papineni et al. 2002 for BLEU, Vedantam et al. 2015 for CIDEr-D, Lin 2004
for ROUGE-L) with the conventions of the COCO caption evaluation toolkit (pycocoevalcap), so the numbers agree with
that toolkit on the same tokens:

- BLEU: clipped n-gram counts and the brevity penalty are summed over the whole corpus; each hypothesis is paired
  with its closest reference length (the shorter one on a tie); precisions carry the toolkit's smoothing constants.
- CIDEr-D: n = 1..4, tf-idf vectors with raw counts, document frequencies taken from the references of the evaluated
  images, idf = log(number of images), hypothesis weights clipped at the reference's, a Gaussian length penalty with
  sigma = 6, averaged over references and n, times 10.
- ROUGE-L: F-measure with beta = 1.2 built from the best precision and the best recall over the references.

Only images that have a hypothesis are evaluated; references for other images are ignored.
"""
from __future__ import annotations

import math
import string
import unicodedata
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

MAX_ORDER = 4
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2
# pycocoevalcap's constants: `_TINY` keeps a zero match count from taking a log of zero, `_SMALL` keeps a zero
# denominator finite; both are far below any real count, so they only matter for empty or very short corpora.
_TINY = 1e-15
_SMALL = 1e-9

_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


def tokenize(text: str) -> list[str]:
    """Lowercase ``text``, delete punctuation (ASCII and Unicode), split on whitespace."""
    text = text.lower().translate(_ASCII_PUNCTUATION)
    if not text.isascii():
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return text.split()


def score(references: Mapping[Hashable, Sequence[str]], hypotheses: Mapping[Hashable, str]) -> dict[str, float]:
    """Score one hypothesis per image against that image's reference captions.

    ``references`` maps an image id to a non-empty list of reference strings, ``hypotheses`` maps an image id to
    one generated string. Returns ``{"BLEU-1": .., "BLEU-4": .., "CIDEr-D": .., "ROUGE-L": ..}`` as raw values
    (CIDEr-D is not multiplied by 100). Raises ValueError naming the id at fault for malformed input.
    """
    refs, hyps = _tokenized_corpus(references, hypotheses)
    hyp_counts = [_ngram_counts(h) for h in hyps]
    ref_counts = [[_ngram_counts(r) for r in rs] for rs in refs]
    scores = {f"BLEU-{n}": value for n, value in enumerate(_bleu(hyps, refs, hyp_counts, ref_counts), start=1)}
    scores["CIDEr-D"] = _cider_d(hyps, refs, hyp_counts, ref_counts)
    scores["ROUGE-L"] = _rouge_l(hyps, refs)
    return scores


def _tokenized_corpus(references, hypotheses):
    """Validate the inputs; return (tokenized references per image, tokenized hypothesis per image)."""
    if not isinstance(references, Mapping):
        raise ValueError(f"references must be a mapping of image id to a list of strings, got {type(references).__name__}")
    if not isinstance(hypotheses, Mapping):
        raise ValueError(f"hypotheses must be a mapping of image id to a string, got {type(hypotheses).__name__}")
    if not hypotheses:
        raise ValueError("hypotheses is empty: nothing to score")
    refs, hyps = [], []
    for image_id, hypothesis in hypotheses.items():
        if image_id not in references:
            raise ValueError(f"hypothesis for image id {image_id!r} has no entry in references")
        if not isinstance(hypothesis, str):
            raise ValueError(f"hypothesis for image id {image_id!r} must be a string, got {type(hypothesis).__name__}")
        image_refs = references[image_id]
        if isinstance(image_refs, str) or not isinstance(image_refs, Sequence):
            raise ValueError(f"references for image id {image_id!r} must be a list of strings, "
                             f"got {type(image_refs).__name__}")
        if len(image_refs) == 0:
            raise ValueError(f"references for image id {image_id!r} are empty: give at least one caption")
        tokenized = []
        for k, ref in enumerate(image_refs):
            if not isinstance(ref, str):
                raise ValueError(f"reference {k} for image id {image_id!r} must be a string, got {type(ref).__name__}")
            tokens = tokenize(ref)
            # An empty reference has no length to compare with and no words to match; it can only be a data error.
            if not tokens:
                raise ValueError(f"reference {k} for image id {image_id!r} has no words after tokenisation: {ref!r}")
            tokenized.append(tokens)
        refs.append(tokenized)
        hyps.append(tokenize(hypothesis))
    return refs, hyps


def _ngram_counts(tokens: list[str]) -> list[Counter]:
    """Counts of the 1- to MAX_ORDER-grams of ``tokens``: element k-1 holds the k-gram Counter."""
    # zip of k shifted views yields the k-grams as tuples without slicing per position
    return [Counter(zip(*(tokens[i:] for i in range(k)))) for k in range(1, MAX_ORDER + 1)]


def _bleu(hyps, refs, hyp_counts, ref_counts) -> list[float]:
    """Corpus BLEU-1..MAX_ORDER: summed clipped matches and n-gram totals, one brevity penalty for the corpus."""
    matches = [0] * MAX_ORDER
    totals = [0] * MAX_ORDER
    hyp_length = ref_length = 0
    for hyp, image_refs, counts, image_ref_counts in zip(hyps, refs, hyp_counts, ref_counts):
        hyp_length += len(hyp)
        # Closest reference length; on a tie the shorter reference wins.
        ref_length += min((abs(len(r) - len(hyp)), len(r)) for r in image_refs)[1]
        for k in range(MAX_ORDER):
            totals[k] += max(0, len(hyp) - k)
            max_ref = Counter()
            for rc in image_ref_counts:
                max_ref |= rc[k]  # Counter union keeps the maximum count per n-gram
            matches[k] += sum(min(c, max_ref[g]) for g, c in counts[k].items())

    ratio = (hyp_length + _TINY) / (ref_length + _SMALL)
    brevity_penalty = math.exp(1.0 - 1.0 / ratio) if ratio < 1.0 else 1.0
    bleus, precision_product = [], 1.0
    for k in range(MAX_ORDER):
        precision_product *= (matches[k] + _TINY) / (totals[k] + _SMALL)
        bleus.append(precision_product ** (1.0 / (k + 1)) * brevity_penalty)  # geometric mean of 1..k+1
    return bleus


def _cider_d(hyps, refs, hyp_counts, ref_counts) -> float:
    """Corpus CIDEr-D: mean over images of :class:`CiderD`'s score of each image's hypothesis, with document
    frequencies from the evaluated images' references."""
    scorer = CiderD(refs, ref_counts)
    return sum(scorer.score(i, hyp, counts) for i, (hyp, counts) in enumerate(zip(hyps, hyp_counts))) / len(hyps)


class CiderD:
    """Per-caption CIDEr-D against fixed references, as self-critical training needs it: the document frequencies
    and the references' tf-idf vectors are computed once, then each :meth:`score` costs one hypothesis's vectors.

    ``references``: per image, a non-empty list of token sequences (words or word ids; any hashable tokens).
    ``ref_counts``: their :func:`_ngram_counts`, when the caller has them already.
    """

    def __init__(self, references, ref_counts=None):
        self._refs = [list(map(list, image_refs)) for image_refs in references]
        if not self._refs or any(not image_refs for image_refs in self._refs):
            raise ValueError("CIDEr-D needs at least one image and at least one reference caption per image")
        if ref_counts is None:
            ref_counts = [[_ngram_counts(r) for r in image_refs] for image_refs in self._refs]
        document_frequency = Counter()
        for image_ref_counts in ref_counts:
            document_frequency.update({g for rc in image_ref_counts for order in rc for g in order})
        self._log_images = math.log(len(self._refs))
        self._idf = {g: self._log_images - math.log(df) for g, df in document_frequency.items()}
        # per image, per reference: (its length, [(tf-idf vector, norm) for n = 1..4])
        self._ref_vectors = [[(len(ref), [self._tfidf(c) for c in rc]) for ref, rc in zip(image_refs, counts)]
                             for image_refs, counts in zip(self._refs, ref_counts)]

    def __len__(self):
        return len(self._refs)

    def _tfidf(self, order_counts: Counter) -> tuple[dict, float]:
        # n-grams absent from every reference count as document frequency 1, i.e. the full idf log(number of images).
        vector = {g: c * self._idf.get(g, self._log_images) for g, c in order_counts.items()}
        return vector, math.sqrt(sum(w * w for w in vector.values()))

    def score(self, image: int, hypothesis, counts=None) -> float:
        """CIDEr-D of ``hypothesis`` (a token sequence) against image ``image``'s references: 10 times the mean over
        n and the references of the clipped, length-penalised cosine similarity of tf-idf n-gram vectors."""
        if not 0 <= image < len(self._refs):
            raise ValueError(f"image {image} is outside the {len(self._refs)} images CIDEr-D was given references for")
        hypothesis = list(hypothesis)
        hyp_vectors = [self._tfidf(c) for c in (_ngram_counts(hypothesis) if counts is None else counts)]
        image_refs = self._ref_vectors[image]
        image_score = 0.0
        for ref_length, ref_vectors in image_refs:
            penalty = math.exp(-((len(hypothesis) - ref_length) ** 2) / (2.0 * CIDER_SIGMA ** 2))
            for (hyp_vec, hyp_norm), (ref_vec, ref_norm) in zip(hyp_vectors, ref_vectors):
                if hyp_norm == 0.0 or ref_norm == 0.0:
                    continue  # a zero vector shares nothing: similarity 0
                # CIDEr-D clips each hypothesis weight at the reference's so repeating a word earns nothing extra.
                dot = sum(min(w, ref_vec[g]) * ref_vec[g] for g, w in hyp_vec.items() if g in ref_vec)
                image_score += penalty * dot / (hyp_norm * ref_norm)
        return 10.0 * image_score / (MAX_ORDER * len(image_refs))


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Hyyro 2004): bit i of ``v`` is 0 where a[i] ends a match counted so far, so one integer addition
    per token of ``b`` replaces a row of the dynamic-programming table.
    """
    match_masks: dict[str, int] = {}
    for i, token in enumerate(a):
        match_masks[token] = match_masks.get(token, 0) | (1 << i)
    all_ones = (1 << len(a)) - 1
    v = all_ones
    for token in b:
        u = v & match_masks.get(token, 0)
        v = ((v + u) | (v - u)) & all_ones
    return len(a) - v.bit_count()


def _rouge_l(hyps, refs) -> float:
    """Corpus ROUGE-L: mean over images of the F-measure of the best precision and best recall over references."""
    total = 0.0
    for hyp, image_refs in zip(hyps, refs):
        if not hyp:
            continue  # an empty hypothesis matches nothing: score 0
        best_precision = best_recall = 0.0
        for ref in image_refs:
            lcs = _lcs_length(hyp, ref)
            best_precision = max(best_precision, lcs / len(hyp))
            best_recall = max(best_recall, lcs / len(ref))
        if best_precision > 0.0 and best_recall > 0.0:
            beta2 = ROUGE_BETA ** 2
            total += (1 + beta2) * best_precision * best_recall / (best_recall + beta2 * best_precision)
    return total / len(hyps)
