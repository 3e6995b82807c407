"""`captionkit sample` and `captionkit evaluate`, end to end on a tiny run made by `captionkit train`.

The oracle for the printed numbers is the library API (captionkit.evaluation) on the same checkpoint and data.
"""
import json
import re
import shutil

import pytest
from click.testing import CliRunner

from captionkit.checkpoint import load_model
from captionkit.cli import main
from captionkit.data import load_coco_data
from captionkit.evaluation import evaluate, sample_captions
from conftest import write_bundle
from training_helpers import run_cli, val_records

TINY_TRAIN = ["--hidden-dim", "12", "--wordvec-dim", "8", "--batch-size", "8", "--epochs", "2", "--eval-images", "4",
              "--num-samples", "2", "--seed", "3"]


def small_vocab(num_words=30):
    idx_to_word = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"word{i}" for i in range(num_words)]
    return {"idx_to_word": idx_to_word, "word_to_idx": {w: i for i, w in enumerate(idx_to_word)}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run directory, bundle directory) of a two-epoch run on 20 training and 6 validation images."""
    root = tmp_path_factory.mktemp("cli_evaluate")
    bundle = write_bundle(root / "bundle", num_train_images=20, num_val_images=6, captions_per_image=3,
                          feature_dim=10, vocab=small_vocab())
    result = CliRunner().invoke(main, ["train", "--data", str(bundle), "--out", str(root / "run"), "-q", *TINY_TRAIN])
    assert result.exit_code == 0, result.output
    return root / "run", bundle


def latest_checkpoint(run):
    return sorted((run / "checkpoints").glob("ckpt-*.npz"))[-1]


def library_evaluation(run, bundle, **kwargs):
    model, _ = load_model(run)
    return evaluate(model, load_coco_data(bundle), **kwargs)


def test_evaluate_json_equals_the_library(tiny_run):
    run, bundle = tiny_run
    result = run_cli("evaluate", run, "--json", "--beam", "2")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    expected = library_evaluation(run, bundle, beam_size=2)
    assert {k: printed[k] for k in expected} == expected
    # 60 training captions in batches of 8 make 7 iterations per epoch; RUN means its best checkpoint, here the last.
    assert printed["iteration"] == 14 and printed["checkpoint"] == str(run / "checkpoints" / "best.npz")
    assert (printed["images"], printed["captions"]) == (6, 18)


def test_evaluate_text_prints_cider_on_the_toolkit_scale(tiny_run):
    run, bundle = tiny_run
    result = run_cli("evaluate", run, "--max-images", "4")
    assert result.exit_code == 0, result.output
    expected = library_evaluation(run, bundle, max_images=4)
    lines = {line.split("  ")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert f"{expected['CIDEr-D']:9.4f}" in lines["CIDEr-D"]
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "perplexity"):
        assert f"{expected[name]:9.4f}" in lines[name]
    assert "on val: 4 images, greedy decoding" in result.stdout
    assert f"over the {expected['tokens']} words of the 12 ground-truth captions" in result.stdout


def test_a_checkpoint_file_works_like_its_run_directory(tiny_run):
    run, _ = tiny_run
    from_dir = run_cli("evaluate", run, "--json", "--split", "train", "--max-images", "5")
    from_file = run_cli("evaluate", run / "checkpoints" / "best.npz", "--json", "--split", "train",
                        "--max-images", "5")
    assert from_dir.exit_code == from_file.exit_code == 0, from_dir.output + from_file.output
    assert json.loads(from_dir.stdout) == json.loads(from_file.stdout)
    assert json.loads(from_dir.stdout)["split"] == "train"


def test_sample_prints_generated_beside_ground_truth(tiny_run):
    run, bundle = tiny_run
    result = run_cli("sample", run, "--n", "3", "--seed", "5", "--beam", "2")
    assert result.exit_code == 0, result.output
    model, _ = load_model(run)
    expected = sample_captions(model, load_coco_data(bundle), num=3, seed=5, beam_size=2)
    assert "3 val images, beam search (beam 2, length penalty 0), seed 5" in result.stdout
    for entry in expected:
        assert f"val image {entry['image']}  http://example.org/val/{entry['image']}.jpg" in result.stdout
        assert f"  generated:    {entry['generated']}\n" in result.stdout
        assert f"  ground truth: {entry['references'][0]}\n" in result.stdout
        for reference in entry["references"][1:]:
            assert f"{' ' * 16}{reference}\n" in result.stdout
    assert run_cli("sample", run, "--n", "3", "--seed", "5", "--beam", "2").stdout == result.stdout


def test_sample_json_and_an_unseeded_sample_says_its_seed(tiny_run):
    run = tiny_run[0]
    unseeded = run_cli("sample", run, "--n", "2")
    assert unseeded.exit_code == 0, unseeded.output
    seed = int(unseeded.stdout.splitlines()[0].rsplit("seed ", 1)[1])
    as_json = run_cli("sample", run, "--n", "2", "--seed", seed, "--json")
    samples = json.loads(as_json.stdout)
    assert len(samples) == 2 and all(f"val image {s['image']}" in unseeded.stdout for s in samples)
    assert set(samples[0]) == {"image", "url", "generated", "references"}


def test_missing_run_is_a_clear_error(tmp_path):
    result = run_cli("evaluate", tmp_path / "no-such-run")
    assert result.exit_code == 1
    assert "no-such-run: checkpoint not found" in result.output and "Traceback" not in result.output


def test_corrupt_checkpoint_is_a_clear_error(tiny_run, tmp_path):
    run, _ = tiny_run
    broken = tmp_path / "ckpt-00000014.npz"
    broken.write_bytes(latest_checkpoint(run).read_bytes()[:500])
    for command in ("evaluate", "sample"):
        result = run_cli(command, broken)
        assert result.exit_code == 1
        assert f"{broken}: cannot read checkpoint; the file is truncated or corrupt" in result.output
        assert "Traceback" not in result.output


def test_run_without_checkpoints_is_a_clear_error(tmp_path):
    result = run_cli("sample", tmp_path)
    assert result.exit_code == 1 and "a directory with no checkpoints" in result.output


def test_a_moved_dataset_suggests_data(tiny_run, tmp_path):
    bundle = tiny_run[1]
    # A run whose stored dataset path no longer exists: train on a bundle that is then removed.
    gone = write_bundle(tmp_path / "gone", num_train_images=20, num_val_images=6, captions_per_image=3,
                        feature_dim=10, vocab=small_vocab())
    trained = run_cli("train", "--data", gone, "--out", tmp_path / "run2", "-q", *TINY_TRAIN)
    assert trained.exit_code == 0, trained.output
    shutil.rmtree(gone)
    result = run_cli("evaluate", tmp_path / "run2")
    assert result.exit_code == 1
    assert f"{gone}: dataset directory not found" in result.output and "--data DIR" in result.output
    rescued = run_cli("evaluate", tmp_path / "run2", "--data", bundle, "--json")
    assert rescued.exit_code == 0 and json.loads(rescued.stdout)["images"] == 6


def test_data_that_does_not_fit_the_model_is_a_clear_error(tiny_run, tmp_path):
    run, _ = tiny_run
    other = write_bundle(tmp_path / "other", num_train_images=4, num_val_images=2, feature_dim=10,
                         vocab=small_vocab(num_words=12))
    result = run_cli("evaluate", run, "--data", other)
    assert result.exit_code == 1
    assert "the dataset's vocabulary differs from the model's (34 words in the model, 16 in the dataset)" in result.output


@pytest.mark.parametrize("args, message", [
    (["--beam", "0"], "0 is not in the range x>=1"),
    (["--split", "dev"], "'dev' is not one of 'train', 'val', 'test'"),
    (["--length-penalty", "-1"], "x>=0"),
])
def test_bad_options_are_usage_errors(tiny_run, args, message):
    result = run_cli("evaluate", tiny_run[0], *args)
    assert result.exit_code == 2 and message in result.output


def test_a_split_the_bundle_lacks_is_named(tiny_run):
    result = run_cli("evaluate", tiny_run[0], "--split", "test")
    assert result.exit_code == 1
    assert "the dataset has no test split (it has train, val)" in result.output


def test_help_explains_run_and_metrics():
    evaluate_help = " ".join(run_cli("evaluate", "--help").output.split())
    assert "RUN is a run directory written by `captionkit train`" in evaluate_help
    assert "CIDEr-D on that toolkit's scale" in evaluate_help and "captionkit evaluate runs/" in evaluate_help
    sample_help = " ".join(run_cli("sample", "--help").output.split())
    assert "beside their ground-truth captions" in sample_help and "--seed" in sample_help


def test_cider_is_on_one_scale_everywhere(three_runs):
    run = three_runs[0]
    last = val_records(run)[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_metrics"]["CIDEr-D"] == last["CIDEr-D"]
    evaluated = json.loads(run_cli("evaluate", run, "--json").stdout)
    text = run_cli("evaluate", run).output
    printed = float(re.search(r"^  CIDEr-D\s+([0-9.]+)$", text, re.M).group(1))
    assert printed == pytest.approx(evaluated["CIDEr-D"], abs=1e-4)
    assert "x100" not in text
    assert {"loss", "perplexity"} <= set(last)
