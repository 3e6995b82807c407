"""Runs a researcher can trust: the best checkpoint, early stopping, exact resume bookkeeping and fine-tuning from a
run (comparison, progress, sampling and the option table have files of their own).

Oracles: the run's own validation records (the best checkpoint must hold the best of them, recomputed here from the
checkpoint with `captionkit.evaluation`) and the metrics each run writes.
"""
import json
import shutil

import numpy as np
import pytest

from captionkit import train
from captionkit.checkpoint import build_model, read_checkpoint
from captionkit.data import load_coco_data
from captionkit.evaluation import evaluate
from captionkit.runs import RunDirectory
from training_helpers import TINY, run_cli, tiny_bundle, val_records


# ---------------------------------------------------------------------------------------------- best and early stop
def test_best_checkpoint_holds_the_best_validation(three_runs, learnable):
    run = three_runs[0]
    records = val_records(run)
    best = max(records, key=lambda r: r["CIDEr-D"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"] == {"metric": "CIDEr-D", "value": best["CIDEr-D"], "iteration": best["iteration"]}
    checkpoint = read_checkpoint(run / "checkpoints" / "best.npz")
    assert checkpoint.iteration == best["iteration"]
    # The best checkpoint's model scores, recomputed independently, what its validation record says.
    model = build_model(checkpoint)
    data = load_coco_data(learnable)
    config = checkpoint.config
    rng = np.random.RandomState([config["seed"], 3])
    images = np.sort(rng.choice(np.unique(data["val_image_idxs"]), size=config["eval_images"], replace=False))
    data_subset = dict(data, val_image_idxs=data["val_image_idxs"][np.isin(data["val_image_idxs"], images)],
                       val_captions=data["val_captions"][np.isin(data["val_image_idxs"], images)])
    scores = evaluate(model, data_subset, "val")
    assert scores["CIDEr-D"] == pytest.approx(best["CIDEr-D"], rel=1e-9, abs=1e-12)
    # best.npz survives pruning: only keep_checkpoints regular checkpoints are left beside it.
    assert len(RunDirectory(run).list_checkpoints()) == 3 and (run / "checkpoints" / "best.npz").is_file()


def test_patience_stops_early_and_resuming_with_more_patience_goes_on(tmp_path, learnable):
    out = tmp_path / "run"
    result = train(data=str(learnable), out=out, progress=False, handle_signals=False,
                   **{**TINY, "epochs": 40, "eval_every": 1, "monitor": "loss", "patience": 1, "lr": 0.3})
    records = val_records(out)
    losses = [r["loss"] for r in records]
    assert result.stopped_early and result.iteration < result.num_iterations
    assert losses[-1] >= min(losses[:-1])  # the last validation did not improve: that is why it stopped
    assert result.best["value"] == min(losses)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] and summary["best"]["iteration"] == result.best["iteration"]
    # Resuming with the same patience has nothing to do and changes nothing.
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    again = train(resume=out, progress=False, handle_signals=False)
    assert again.already_done and again.stopped_early
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
    # With more patience it trains on from where it stopped.
    more = train(resume=out, progress=False, handle_signals=False, patience=1000)
    assert more.iteration == more.num_iterations and not more.stopped_early
    train_iterations = [r["iteration"] for r in RunDirectory(out).read_metrics() if r["kind"] == "train"]
    assert train_iterations == list(range(1, more.num_iterations + 1))


# ---------------------------------------------------------------------------------------------- resume bookkeeping
def test_resuming_a_finished_run_changes_nothing_and_says_so(tmp_path, three_runs):
    run = tmp_path / "run"
    shutil.copytree(three_runs[1], run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    result = run_cli("train", "--resume", run)
    assert result.exit_code == 0
    assert f"{run} is finished at iteration 36: the run has trained all 36 iterations of its 6 epochs; give a " \
           "larger --epochs to train longer. Nothing was changed." in result.output
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_training_longer_keeps_each_iteration_once_and_adds_up_time(tmp_path, three_runs):
    run = tmp_path / "run"
    shutil.copytree(three_runs[2], run)
    first = json.loads((run / "summary.json").read_text())["elapsed"]
    result = train(resume=run, epochs=8, progress=False, handle_signals=False)
    records = RunDirectory(run).read_metrics()
    for kind in ("train", "val"):
        iterations = [r["iteration"] for r in records if r["kind"] == kind]
        assert len(iterations) == len(set(iterations)) and iterations == sorted(iterations)
    assert [r["iteration"] for r in records if r["kind"] == "train"] == list(range(1, 49))
    assert result.elapsed > first and json.loads((run / "summary.json").read_text())["elapsed"] > first
    assert first < read_checkpoint(RunDirectory(run).latest_checkpoint()).run_state["elapsed"] <= result.elapsed


def test_resuming_into_another_directory_starts_from_the_source_metrics_up_to_the_checkpoint(tmp_path, three_runs):
    source = tmp_path / "source"
    shutil.copytree(three_runs[2], source)
    before = (source / "metrics.jsonl").read_text()
    checkpoints = RunDirectory(source).list_checkpoints()
    at, first_checkpoint = checkpoints[0]
    assert at < checkpoints[-1][0]  # an earlier checkpoint, with records after it in the source
    train(resume=first_checkpoint, out=tmp_path / "branch", epochs=8, progress=False, handle_signals=False)
    copied = [r for r in RunDirectory(tmp_path / "branch").read_metrics() if r["iteration"] <= at]
    assert copied == [r for r in RunDirectory(source).read_metrics() if r["iteration"] <= at]
    trained = [r["iteration"] for r in RunDirectory(tmp_path / "branch").read_metrics() if r["kind"] == "train"]
    assert trained == list(range(1, trained[-1] + 1))  # each iteration once: the source's, then the branch's
    assert (source / "metrics.jsonl").read_text() == before  # the source run is left as it was


# ---------------------------------------------------------------------------------------------- fine-tuning
def test_init_from_starts_a_new_run_from_the_weights(tmp_path, three_runs, learnable):
    source = three_runs[0]
    best = read_checkpoint(source / "checkpoints" / "best.npz")
    result = train(data=str(learnable), out=tmp_path / "tuned", init_from=str(source), lr=1e-3, epochs=1,
                   eval_every=0, progress=False, handle_signals=False,
                   **{k: v for k, v in TINY.items() if k not in ("epochs",)})
    tuned = read_checkpoint(result.checkpoint)
    assert tuned.iteration == result.num_iterations == 6  # a new run: its own count, from zero
    assert tuned.config["init_from"] == str(source.resolve())
    # The first loss is that of the source's best weights on the same first minibatch, far below a fresh model's.
    fresh = train(data=str(learnable), out=tmp_path / "fresh", lr=1e-3, epochs=1, eval_every=0, progress=False,
                  handle_signals=False, **{k: v for k, v in TINY.items() if k not in ("epochs",)})
    assert result.loss_history[0] < 0.5 * fresh.loss_history[0]
    assert best.iteration > 0


def test_init_from_a_model_that_does_not_fit_is_refused(tmp_path, three_runs, learnable):
    other = tiny_bundle(tmp_path / "other", vocab={"idx_to_word": ["<NULL>", "<START>", "<END>", "<UNK>", "x", "y"],
                                                   "word_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2,
                                                                   "<UNK>": 3, "x": 4, "y": 5}})
    result = run_cli("train", "--data", other, "--init-from", three_runs[0], "--out", tmp_path / "a",
                     "--hidden-dim", 12, "--wordvec-dim", 8)
    assert result.exit_code == 1 and "vocabulary differs from the checkpoint's" in result.output
    assert "--init-from" in result.output and len(result.output.strip().splitlines()) == 1
    result = run_cli("train", "--data", learnable, "--init-from", three_runs[1], "--out", tmp_path / "b",
                     "--hidden-dim", 12, "--wordvec-dim", 8)
    assert result.exit_code == 1 and "hidden_dim=16, but this run needs hidden_dim=12" in result.output
