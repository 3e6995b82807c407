"""Runs a researcher can trust and compare: the best checkpoint, early stopping, exact resume bookkeeping,
fine-tuning from a run, comparison, progress, random sampling, and one option table.

Oracles: the run's own validation records (the best checkpoint must hold the best of them, recomputed here from the
checkpoint with `captionkit.evaluation`), the numpy softmax of the model's scores (random sampling), greedy decoding
(top-k 1), and the option table itself (click options, config checks and the docs table must agree with it).
"""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from captionkit import load_model, train
from captionkit.checkpoint import build_model, read_checkpoint
from captionkit.comparison import compare_runs, read_run
from captionkit.data import load_coco_data
from captionkit.decoding import sample_words
from captionkit.evaluation import evaluate
from captionkit.options import OPTIONS, RESUMABLE_OPTIONS, TrainConfig, markdown_table
from captionkit.progress import ProgressDisplay
from captionkit.runs import RunDirectory
from conftest import REPO_ROOT, TESTS_DIR
from training_helpers import TINY, run_cli, tiny_bundle, val_records

ROOT = REPO_ROOT


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


# ---------------------------------------------------------------------------------------------- compare
def test_compare_tabulates_differences_best_and_final(tmp_path, three_runs):
    result = run_cli("compare", *three_runs, "--plot", tmp_path / "compare.png")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0].split()
    assert header[:6] == ["run", "cell", "hidden", "wordvec", "hidden_dim", "lr"]
    for k, run in enumerate(three_runs):
        row = next(line for line in lines if line.startswith(run.name))
        summary = json.loads((run / "summary.json").read_text())
        assert f"{summary['best']['value']:.4f}" in row and "finished" in row
        assert f"{summary['val_metrics']['CIDEr-D']:.3f}" in row
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    table = json.loads(run_cli("compare", *three_runs, "--json", "--no-plot").output)
    assert table["differing"] == ["hidden_dim", "lr"] and table["metric"] == "CIDEr-D"
    assert [row["options"]["lr"] for row in table["runs"]] == [1e-2, 1e-2, 3e-2]
    by_bleu = compare_runs([read_run(run) for run in three_runs], "BLEU-4")
    for row, run in zip(by_bleu["runs"], three_runs):
        assert row["best"]["value"] == max(r["BLEU-4"] for r in val_records(run))
    assert run_cli("compare", tmp_path).exit_code == 1  # not a run directory


def test_compare_names_runs_apart_and_refuses_one_run_twice(tmp_path, three_runs):
    import shutil

    for parent in ("a", "b"):
        shutil.copytree(three_runs[0], tmp_path / parent / "same-name")
    table = json.loads(run_cli("compare", tmp_path / "a" / "same-name", tmp_path / "b" / "same-name",
                               three_runs[1], "--json", "--no-plot").output)
    assert [row["run"] for row in table["runs"]] == ["a/same-name", "b/same-name", three_runs[1].name]
    result = run_cli("compare", three_runs[0], three_runs[0].parent / "." / three_runs[0].name, "--no-plot")
    assert result.exit_code == 1 and "given twice" in result.output and len(result.output.splitlines()) == 1


# ---------------------------------------------------------------------------------------------- one scale
def test_cider_is_on_one_scale_everywhere(three_runs):
    run = three_runs[0]
    last = val_records(run)[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_metrics"]["CIDEr-D"] == last["CIDEr-D"]
    evaluated = json.loads(run_cli("evaluate", run, "--json").output)
    text = run_cli("evaluate", run).output
    printed = float(re.search(r"^  CIDEr-D\s+([0-9.]+)$", text, re.M).group(1))
    assert printed == pytest.approx(evaluated["CIDEr-D"], abs=1e-4)
    assert "x100" not in text
    assert {"loss", "perplexity"} <= set(last)


# ---------------------------------------------------------------------------------------------- progress
class _Stream:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return False


def test_progress_shows_rate_elapsed_eta_and_survives_a_stall(tmp_path, learnable, monkeypatch):
    events = []
    import time as time_module

    import captionkit.solver as solver_module

    original = solver_module.CaptioningSolver._step
    calls = {"n": 0}

    def step_with_a_stall(self):
        calls["n"] += 1
        if calls["n"] == 5:
            time_module.sleep(0.5)  # one slow iteration, as a shared machine gives
        return original(self)

    monkeypatch.setattr(solver_module.CaptioningSolver, "_step", step_with_a_stall)
    display_stream = _Stream()
    display = ProgressDisplay(display_stream)
    train(data=str(learnable), out=tmp_path / "run", progress=False, handle_signals=False,
          callback=lambda e: (events.append(e), display(e)), **TINY)
    iterations = [e for e in events if e["event"] == "iteration"]
    assert all(e["iterations_per_second"] > 0 and e["elapsed"] >= 0 for e in iterations)
    # The median of recent iterations: the stall does not make the rate collapse or the ETA jump.
    after = iterations[5]
    assert after["iterations_per_second"] > 10 and after["eta"] < 0.5
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and all(e["seconds"] >= 0 for e in evals)
    assert all("seconds" in e for e in events if e["event"] == "checkpoint")
    assert re.search(r"iteration 12/12 .* it/s  0:0\d elapsed  ETA 0:00", display_stream.text)
    assert "val @ iteration 6 (6 images, " in display_stream.text


def test_the_python_api_shows_progress_by_default(tmp_path, learnable):
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r})\n"
            "from training_helpers import TINY\nfrom captionkit import train\n"
            f"train(data={str(learnable)!r}, out={str(tmp_path / 'a')!r}, **TINY)\n"
            f"train(data={str(learnable)!r}, out={str(tmp_path / 'b')!r}, progress=False, **TINY)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Training the rnn cell") == 1 and "iteration 12/12" in done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------------------------------------- sampling
def test_random_sampling_follows_the_models_distribution(three_runs):
    model, _ = load_model(three_runs[0])
    features = np.random.default_rng(0).standard_normal((1, model.input_dim)).astype(model.dtype)
    # The oracle: the first word's distribution from the model's parameters with numpy alone.
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    h0 = features @ p["W_proj"] + p["b_proj"]
    x = p["W_embed"][model.word_to_idx["<START>"]]
    h1 = np.tanh(x @ p["Wx"] + h0 @ p["Wh"] + p["b"])
    scores = (h1 @ p["W_vocab"] + p["b_vocab"])[0]
    for temperature, top_k in ((1.0, None), (0.5, 3)):
        expected = np.exp((scores - scores.max()) / temperature)
        if top_k is not None:
            expected[np.argsort(-scores)[top_k:]] = 0
        expected /= expected.sum()
        draws = 4000
        words = sample_words(model, np.repeat(features, draws, axis=0), max_length=1, temperature=temperature,
                             top_k=top_k, rng=np.random.default_rng(1))[:, 0]
        observed = np.bincount(words, minlength=model.vocab_size) / draws
        assert np.abs(observed - expected).max() < 4 * np.sqrt(expected.max() / draws) + 1e-3
        if top_k is not None:
            assert set(np.unique(words)) <= set(np.argsort(-scores)[:top_k])
    greedy = model.sample(features, max_length=8)
    assert np.array_equal(sample_words(model, features, 8, top_k=1, rng=np.random.default_rng(2)), greedy)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        sample_words(model, features, 8, temperature=0)


def test_sample_command_draws_reproducibly(three_runs):
    first = run_cli("sample", three_runs[0], "--temperature", 1.5, "--top-k", 5, "--seed", 3, "--json")
    again = run_cli("sample", three_runs[0], "--temperature", 1.5, "--top-k", 5, "--seed", 3, "--json")
    assert first.exit_code == 0 and first.output == again.output
    clash = run_cli("sample", three_runs[0], "--temperature", 1.5, "--beam", 3)
    assert clash.exit_code == 2 and "use one or the other" in clash.output


# ---------------------------------------------------------------------------------------------- pipes and names
def test_a_closed_pipe_ends_quietly(three_runs):
    command = [sys.executable, "-c", "from captionkit.cli import main; main()", "sample", str(three_runs[0]),
               "--n", "6"]
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    producer.stdout.readline()
    producer.stdout.close()  # `| head -1`
    _, err = producer.communicate(timeout=60)
    assert producer.returncode == 0 and b"Broken pipe" not in err and err == b""


@pytest.mark.parametrize("args, message", [
    (["train", "--cell", "lsmt"], "unknown cell_type 'lsmt' (did you mean 'lstm'?)"),
    (["data", "import", "x", "--karpathy", "y.json", "--encoder", "shape"], "unknown encoder 'shape' (did you mean "
                                                                            "'shapes'?)"),
])
def test_misspelt_names_get_a_suggestion(args, message):
    result = run_cli(*args)
    assert result.exit_code == 1 and message in result.output


# ---------------------------------------------------------------------------------------------- one option table
def test_every_option_is_declared_once_and_used_everywhere():
    help_text = run_cli("train", "--help").output
    config_fields = set(TrainConfig().to_dict())
    assert config_fields == {o.name for o in OPTIONS}
    for option in OPTIONS:
        assert option.flag in help_text
        assert getattr(TrainConfig(), option.name) == option.default
    assert RESUMABLE_OPTIONS == {o.name for o in OPTIONS if o.resumable}
    docs = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    assert markdown_table() in docs, "docs/training.md's options table is not the one captionkit.options makes"
    # A bad value is refused with the same words on the command line, in a config file and in train().
    from captionkit.runs import ConfigError

    with pytest.raises(ConfigError, match="option 'patience' is 0, expected an integer >= 1 or null"):
        train(patience=0, progress=False)
