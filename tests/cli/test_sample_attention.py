"""`captionkit sample --attention-weights`: each generated word with the regions its attention model looked at.

Oracle: the teacher-forced forward pass of training (the cell's ``run_forward`` on ``<START>`` and the printed
words, its weights from ``attention_weights(cache)``), a different code path from the decoding steps the command
reads; step t of that pass is the one that predicts word t.
"""
import json

import numpy as np
import pytest

from captionkit.data import load_coco_data
from captionkit.loading import load_model
from captionkit.vocabulary import START
from training_helpers import run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(attention run, pooled run, grid bundle): tiny models on 2 x 2 grid scenes."""
    root = tmp_path_factory.mktemp("sample-attention")
    bundle = root / "grid"
    made = run_cli("data", "synth", bundle, "--grid", 2, "--num-train", 40, "--num-val", 8, "--seed", 3)
    assert made.exit_code == 0, made.output
    tiny = ("--data", bundle, "--hidden-dim", 24, "--wordvec-dim", 16, "--epochs", 3, "--batch-size", 20,
            "--eval-images", 8, "--num-samples", 1, "--quiet")
    attended = run_cli("train", *tiny, "--attention", "soft", "--attention-dim", 16, "--out", root / "soft")
    assert attended.exit_code == 0, attended.output
    pooled = run_cli("train", *tiny, "--out", root / "pooled")
    assert pooled.exit_code == 0, pooled.output
    return root / "soft", root / "pooled", bundle


def _teacher_forced_weights(model, features, words):
    """alpha (len(words), L) of the training forward pass reading <START> and ``words``: row t chose words[t]."""
    ids = np.array([[model.word_to_idx[START]] + [model.word_to_idx[w] for w in words]])
    h0, context, _ = model.conditioning.forward(features[None], model.params)
    _, cache = model.cell.run_forward(model.params["W_embed"][ids[:, :-1]], h0, model.params, context)
    return model.cell.attention_weights(cache)[0]


def test_json_weights_are_the_models_own(runs):
    run, _, bundle = runs
    result = run_cli("sample", run, "--attention-weights", "--n", 3, "--seed", 5, "--json")
    assert result.exit_code == 0, result.output
    samples = json.loads(result.stdout)
    model, _ = load_model(run)
    features = load_coco_data(bundle)["val_features"]
    assert len(samples) == 3
    for entry in samples:
        assert entry["generated"] == " ".join(entry["words"]) and entry["words"]
        weights = np.array(entry["attention"])
        assert weights.shape == (len(entry["words"]), 4)
        expected = _teacher_forced_weights(model, features[entry["image"]], entry["words"])
        np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)


def test_text_lists_each_words_most_attended_regions(runs):
    run, _, bundle = runs
    data = run_cli("sample", run, "--attention-weights", "--n", 2, "--seed", 5, "--json")
    text = run_cli("sample", run, "--attention-weights", "--n", 2, "--seed", 5, "--top-regions", 2)
    assert text.exit_code == 0, text.output
    assert "each word's 2 most-attended of 4 regions (a 2 x 2 grid, (row, col) from the top left)" in text.stdout
    lines = text.stdout.splitlines()
    for entry in json.loads(data.stdout):
        start = lines.index(f"  generated:    {entry['generated']}") + 1
        for word, weights, line in zip(entry["words"], entry["attention"], lines[start:]):
            # e.g. "      red     (1, 0) 0.62     (0, 0) 0.21"
            name, rest = line.split(None, 1)
            assert name == word
            pairs = rest.replace("(", "").replace(",", "").replace(")", "").split()
            printed = [(int(pairs[k]) * 2 + int(pairs[k + 1]), float(pairs[k + 2])) for k in range(0, len(pairs), 3)]
            assert len(printed) == 2
            for region, weight in printed:
                assert weight == pytest.approx(weights[region], abs=0.005)
            shown = {region for region, _ in printed}
            # the printed regions are the largest weights: none left out outweighs one shown
            assert min(weights[r] for r in shown) >= max(w for r, w in enumerate(weights) if r not in shown)


def test_pooled_models_and_other_decodings_are_refused(runs):
    _, pooled, _ = runs
    refused = run_cli("sample", pooled, "--attention-weights")
    assert refused.exit_code == 1
    assert "has no attention, so no attention weights" in refused.output
    assert "--attention soft" in refused.output
    for other in (("--beam", 3), ("--temperature", 0.8), ("--top-k", 4)):
        clash = run_cli("sample", runs[0], "--attention-weights", *other)
        assert clash.exit_code == 2 and "--attention-weights shows the weights of greedy decoding" in clash.output
