"""Which checkpoint a run directory means (captionkit.runs.resolve_checkpoint) and how the choice is named
(captionkit.loading.describe_checkpoint).

resolve_checkpoint only looks at file names, so the runs here are folders of empty files laid out as `train` lays
them out; the oracle is that layout. A load of a real checkpoint is in tests/cli/test_checkpoint_option.py.
"""
import re
from pathlib import Path

import pytest

from captionkit.checkpoint_schema import CheckpointError
from captionkit.loading import describe_checkpoint, load_model
from captionkit.runs import RunDirectory, resolve_checkpoint


def fake_run(root, iterations=(10, 20, 30), best=True):
    """A run directory with config.json, ckpt-<iteration>.npz files and (with ``best``) best.npz, all empty."""
    run = RunDirectory(root)
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("{}")
    for iteration in iterations:
        run.checkpoint_path(iteration).write_bytes(b"")
    if best:
        run.best_checkpoint.write_bytes(b"")
    return run


def test_a_run_means_its_best_checkpoint_when_it_has_one(tmp_path):
    run = fake_run(tmp_path / "run")
    assert resolve_checkpoint(run.root, None) == run.best_checkpoint
    assert resolve_checkpoint(run.root, "best") == run.best_checkpoint


def test_latest_is_the_highest_iteration_and_stays_the_default_for_resuming(tmp_path):
    run = fake_run(tmp_path / "run", iterations=(100, 20, 3))
    assert resolve_checkpoint(run.root, "latest") == run.checkpoint_path(100)
    assert resolve_checkpoint(run.root) == run.checkpoint_path(100)


def test_a_run_without_best_means_its_latest_and_refuses_best_by_name(tmp_path):
    run = fake_run(tmp_path / "run", best=False)
    assert resolve_checkpoint(run.root, None) == run.checkpoint_path(30)
    with pytest.raises(CheckpointError, match=re.escape(f"{run.root}: has no best checkpoint ({run.best_checkpoint}")):
        resolve_checkpoint(run.root, "best")


def test_a_dangling_best_link_is_still_chosen_so_that_its_reader_refuses_it(tmp_path):
    run = fake_run(tmp_path / "run", best=False)
    run.best_checkpoint.symlink_to(tmp_path / "gone.npz")
    assert resolve_checkpoint(run.root, None) == run.best_checkpoint


def test_an_explicit_file_by_name_in_the_run_or_by_path(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(run.root, "ckpt-00000020.npz") == run.checkpoint_path(20)
    assert resolve_checkpoint(run.root, str(run.checkpoint_path(10))) == run.checkpoint_path(10)
    relative = Path("run/checkpoints/ckpt-00000030.npz")
    assert resolve_checkpoint(run.root, str(relative)) == relative


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    run, other = fake_run(tmp_path / "run"), fake_run(tmp_path / "other")
    refusal = f"{other.checkpoint_path(10)}: not a checkpoint of {run.root}"
    with pytest.raises(CheckpointError, match=re.escape(refusal)):
        resolve_checkpoint(run.root, str(other.checkpoint_path(10)))


def test_a_bad_choice_is_one_line_naming_it_and_where_it_was_looked_for(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint(run.root, "bset")
    assert str(caught.value) == (f"checkpoint 'bset': not 'best', 'latest' or a checkpoint file (no file bset nor "
                                 f"{run.checkpoints / 'bset'})")
    with pytest.raises(CheckpointError, match=r"^checkpoint 'nowhere/x\.npz': .*\(no file nowhere/x\.npz\)$"):
        resolve_checkpoint(run.root, "nowhere/x.npz")


def test_a_checkpoint_file_is_its_own_answer_and_refuses_another_choice(tmp_path):
    run = fake_run(tmp_path / "run")
    path = run.checkpoint_path(20)
    assert resolve_checkpoint(path, None) == resolve_checkpoint(path, "latest") == path
    for choice in ("best", "ckpt-00000010.npz"):
        with pytest.raises(CheckpointError, match=re.escape(f"{path}: a checkpoint file; checkpoint {choice!r}")):
            resolve_checkpoint(path, choice)


def test_an_unusable_best_says_how_to_use_the_latest(tmp_path):
    run = fake_run(tmp_path / "run")
    run.best_checkpoint.write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match=re.escape(
            "(the run's best checkpoint; to use its latest, ckpt-00000030.npz, choose checkpoint 'latest')")):
        load_model(run.root)


def info_for(run, path, iteration, state):
    return {"checkpoint": path, "run_dir": run.root.resolve() if run else None, "iteration": iteration,
            "run_state": state}


STATE = {"monitor": "CIDEr-D", "best": 3.33125, "best_iteration": 20}


def test_the_description_of_best_latest_and_other_files(tmp_path):
    run = fake_run(tmp_path / "run")
    assert describe_checkpoint(info_for(run, run.best_checkpoint, 20, STATE)) == \
        f"{run.best_checkpoint} (best val CIDEr-D 3.3312 at iteration 20)"
    assert describe_checkpoint(info_for(run, run.checkpoint_path(30), 30, STATE)) == \
        f"{run.checkpoint_path(30)} (latest, iteration 30)"
    assert describe_checkpoint(info_for(run, run.checkpoint_path(10), 10, STATE)) == \
        f"{run.checkpoint_path(10)} (iteration 10)"
    loose = tmp_path / "model.npz"
    assert describe_checkpoint(info_for(None, loose, 0, {})) == f"{loose} (iteration 0)"


def test_the_description_says_when_the_run_has_no_best(tmp_path):
    run = fake_run(tmp_path / "run", best=False)
    assert describe_checkpoint(info_for(run, run.checkpoint_path(30), 30, {})) == \
        f"{run.checkpoint_path(30)} (latest, iteration 30; the run has no best checkpoint)"
