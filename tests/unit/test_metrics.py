"""captionkit.metrics against pycocoevalcap (the COCO caption evaluation toolkit) as the oracle."""
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captionkit.metrics import score, tokenize
from conftest import DATA_DIR

COCO_REFS = DATA_DIR / "debug.ref.json"
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L")
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def oracle():
    """Score with pycocoevalcap's pure-python Bleu, Cider and Rouge on captionkit's tokens."""
    pycoco = pytest.importorskip("pycocoevalcap")
    del pycoco
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    def run(references, hypotheses):
        gts = {i: [" ".join(tokenize(r)) for r in references[i]] for i in hypotheses}
        res = {i: [" ".join(tokenize(h))] for i, h in hypotheses.items()}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        cider, _ = Cider().compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        return {**dict(zip(METRICS[:4], bleu)), "CIDEr-D": float(cider), "ROUGE-L": float(rouge)}

    return run


def assert_matches(oracle, references, hypotheses):
    ours, theirs = score(references, hypotheses), oracle(references, hypotheses)
    assert set(ours) == set(METRICS)
    for name in METRICS:
        assert abs(ours[name] - theirs[name]) <= TOLERANCE, (name, ours[name], theirs[name])
    return ours


@pytest.fixture(scope="module")
def coco():
    with open(COCO_REFS) as f:
        return json.load(f)


def leave_one_out(coco, k):
    """Caption k of each image as the hypothesis, the other captions as references."""
    hypotheses = {i: caps[k] for i, caps in coco.items()}
    references = {i: caps[:k] + caps[k + 1:] for i, caps in coco.items()}
    return references, hypotheses


@pytest.mark.parametrize("k", range(4))
def test_coco_leave_one_out_matches_pycocoevalcap(oracle, coco, k):
    ours = assert_matches(oracle, *leave_one_out(coco, k))
    # Human captions of the same image overlap a lot but not fully: values far from 0 and 1 make the test bite.
    assert 0.3 < ours["BLEU-1"] < 1.0 and 0.0 < ours["BLEU-4"] < ours["BLEU-1"] and ours["CIDEr-D"] > 0.2


PERTURBATIONS = {
    "drop_every_third_word": lambda words, rng: [w for j, w in enumerate(words) if j % 3 != 2],
    "shuffle": lambda words, rng: rng.sample(words, len(words)),
    "repeat_first_word": lambda words, rng: words[:1] * 6 + words,
    "truncate_to_two_words": lambda words, rng: words[:2],
    "append_unseen_words": lambda words, rng: words + ["zebra", "quantum", "zebra"],
    "empty": lambda words, rng: [],
}


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_coco_perturbed_hypotheses_match_pycocoevalcap(oracle, coco, name):
    rng = random.Random(name)
    references, hypotheses = leave_one_out(coco, 0)
    # Perturb every other image so each corpus mixes clean and damaged hypotheses.
    hypotheses = {i: " ".join(PERTURBATIONS[name](h.split(), rng)) if j % 2 == 0 else h
                  for j, (i, h) in enumerate(hypotheses.items())}
    assert_matches(oracle, references, hypotheses)


VOCAB = ["a", "the", "man", "dog", "on", "of", "red", "bus", "two", "people", "street", "sitting"]
sentences = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=12).map(" ".join)


@st.composite
def corpora(draw):
    n_images = draw(st.integers(1, 6))
    references = {i: draw(st.lists(sentences, min_size=1, max_size=5)) for i in range(n_images)}
    hypotheses = {}
    for i in range(n_images):
        kind = draw(st.sampled_from(["random", "short", "empty", "copy_of_reference"]))
        if kind == "random":
            hypotheses[i] = draw(sentences)
        elif kind == "short":
            hypotheses[i] = " ".join(draw(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=3)))
        elif kind == "empty":
            hypotheses[i] = ""
        else:
            hypotheses[i] = draw(st.sampled_from(references[i]))
    return references, hypotheses


@settings(max_examples=150, deadline=None)
@given(corpora())
def test_random_corpora_match_pycocoevalcap(oracle, corpus):
    assert_matches(oracle, *corpus)


def test_seeded_larger_corpus_matches_pycocoevalcap(oracle):
    rng = random.Random(5)
    words = VOCAB + [f"w{j}" for j in range(40)]
    make = lambda lo, hi: " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    references = {f"img{i}": [make(5, 15) for _ in range(5)] for i in range(200)}
    hypotheses = {f"img{i}": make(0, 15) for i in range(200)}
    assert_matches(oracle, references, hypotheses)


@pytest.mark.parametrize("hypothesis", ["a dog", "a man on the street", "", "the the the the the"])
def test_single_image_matches_pycocoevalcap(oracle, hypothesis):
    references = {"only": ["a man on the street", "a man is on a street with a dog"]}
    ours = assert_matches(oracle, references, {"only": hypothesis})
    assert ours["CIDEr-D"] == 0.0  # idf = log(1 image) = 0 for every n-gram


def test_references_without_hypothesis_are_ignored(oracle, coco):
    references, hypotheses = leave_one_out(coco, 1)
    evaluated = dict(list(hypotheses.items())[:6])
    assert score(references, evaluated) == score({i: references[i] for i in evaluated}, evaluated)
    assert_matches(oracle, references, evaluated)


def test_hypothesis_equal_to_sole_reference_scores_one():
    references = {1: ["a red bus on the street"], 2: ["two people sitting on a bench"]}
    result = score(references, {1: "A red bus, on the street.", 2: "two people sitting on a bench"})
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"):
        assert result[name] == pytest.approx(1.0, abs=1e-6), name


def test_tokenize_lowercases_strips_punctuation_and_splits():
    assert tokenize("A man's dog, running.\tFast!  ") == ["a", "mans", "dog", "running", "fast"]
    assert tokenize("«Café» — naïve…") == ["café", "naïve"]
    assert tokenize(" ... ") == []


@pytest.mark.parametrize("references, hypotheses, message", [
    ({1: ["a dog"]}, {2: "a dog"}, "image id 2 has no entry in references"),
    ({1: ["a dog"]}, {1: ["a dog"]}, "hypothesis for image id 1 must be a string"),
    ({1: []}, {1: "a dog"}, "references for image id 1 are empty"),
    ({"x": "a dog"}, {"x": "a dog"}, "references for image id 'x' must be a list of strings"),
    ({1: ["a dog", 7]}, {1: "a dog"}, "reference 1 for image id 1 must be a string"),
    ({1: ["a dog", "?!"]}, {1: "a dog"}, "reference 1 for image id 1 has no words"),
    ({1: ["a dog"]}, {}, "hypotheses is empty"),
    ([["a dog"]], {0: "a dog"}, "references must be a mapping"),
])
def test_bad_input_raises_value_error_naming_the_fault(references, hypotheses, message):
    with pytest.raises(ValueError, match=message):
        score(references, hypotheses)
