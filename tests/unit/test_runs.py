"""captionkit.runs: a run directory's files, its checkpoints and metrics, claiming a directory, and config files.

Oracles: directories and files laid out by hand here, so each expected listing, record and message is the one the
test arranged.
"""
import json
import re

import pytest

from captionkit.checkpoint import CheckpointError
from captionkit.runs import (ConfigError, RunDirectory, claim_run_dir, new_run_dir, read_config_file,
                             resolve_checkpoint, run_dir_of)


def make_checkpoints(run, *iterations):
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    for iteration in iterations:
        run.checkpoint_path(iteration).write_bytes(b"npz")


def test_checkpoints_are_listed_by_iteration_and_pruned_oldest_first(tmp_path):
    run = RunDirectory(tmp_path)
    assert run.list_checkpoints() == [] and run.latest_checkpoint() is None
    make_checkpoints(run, 120, 6, 36)
    (run.checkpoints / "ckpt-12.npz").write_bytes(b"")  # fewer than 8 digits: not captionkit's name
    (run.checkpoints / "best.npz").write_bytes(b"")
    assert run.checkpoint_path(6).name == "ckpt-00000006.npz"
    assert [it for it, _ in run.list_checkpoints()] == [6, 36, 120]
    assert run.latest_checkpoint() == run.checkpoints / "ckpt-00000120.npz"
    run.prune_checkpoints(2)
    assert [it for it, _ in run.list_checkpoints()] == [36, 120] and run.best_checkpoint.exists()


def test_only_atomic_writes_temporary_files_are_removed(tmp_path):
    run = RunDirectory(tmp_path)
    make_checkpoints(run, 6)
    partial = [tmp_path / ".summary.json.12-0123abcd.tmp", run.checkpoints / ".ckpt-00000012.npz.9-ffffffff.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".summary.json.12-XYZ.tmp", run.checkpoint_path(6)]
    for path in partial + kept:
        path.write_bytes(b"x")
    run.remove_partial_files()
    assert [p.exists() for p in partial] == [False, False] and all(p.exists() for p in kept)


def test_metrics_skip_cut_lines_and_truncate_at_an_iteration(tmp_path):
    run = RunDirectory(tmp_path)
    assert run.read_metrics() == []
    with run.open_metrics() as f:
        for iteration in (1, 2, 3):
            f.write(json.dumps({"kind": "train", "iteration": iteration}) + "\n")
        f.write('{"kind": "val", "iteration": 3}\n[1, 2]\n{"iteration": "4"}\n{"kind": "train", "itera')
    assert [(r["kind"], r["iteration"]) for r in run.read_metrics()] == [("train", 1), ("train", 2), ("train", 3),
                                                                          ("val", 3)]
    elsewhere = RunDirectory(tmp_path / "copy")
    elsewhere.root.mkdir()
    elsewhere.truncate_metrics(2, source=run)
    assert [r["iteration"] for r in elsewhere.read_metrics()] == [1, 2]
    run.truncate_metrics(1)
    assert run.read_metrics() == [{"kind": "train", "iteration": 1}]


def test_records_that_are_not_objects_read_as_missing(tmp_path):
    run = RunDirectory(tmp_path)
    run.write_json(run.summary, {"b": 1, "a": [2]})
    assert run.summary.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'  # sorted, indented: diffable
    assert run.read_json(run.summary) == {"a": [2], "b": 1}
    run.config.write_text("[1, 2]")
    assert run.read_json(run.config) == {} and run.read_json(tmp_path / "missing.json") == {}
    run.config.write_text('{"cut": ')
    assert run.read_json(run.config) == {}


def test_a_checkpoint_knows_its_run_and_a_run_its_latest_checkpoint(tmp_path):
    run = RunDirectory(tmp_path / "run")
    make_checkpoints(run, 6, 12)
    assert run_dir_of(run.checkpoint_path(12)) is None  # no config.json: not a run yet
    run.config.write_text("{}")
    assert run_dir_of(run.checkpoint_path(12)) == run.root.resolve()
    assert run_dir_of(tmp_path / "elsewhere.npz") is None
    assert resolve_checkpoint(run.root) == run.checkpoint_path(12)
    assert resolve_checkpoint(run.checkpoint_path(6)) == run.checkpoint_path(6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: a directory with no checkpoints in .*empty/checkpoints"):
        resolve_checkpoint(tmp_path / "empty")


def test_new_run_directories_are_named_by_cell_and_time_and_never_reused(tmp_path):
    first, second = new_run_dir(tmp_path / "runs", "lstm"), new_run_dir(tmp_path / "runs", "lstm")
    assert re.fullmatch(r"lstm-\d{8}-\d{6}", first.name) and first.is_dir() and second.is_dir()
    assert first != second  # the same second: a suffix


def test_claiming_a_directory_that_holds_a_run_is_refused_and_releases_the_lock(tmp_path):
    run, lock = claim_run_dir(tmp_path / "fresh")
    try:
        assert run.root == tmp_path / "fresh" and (run.root / ".lock").exists()
    finally:
        lock.release()
    taken = RunDirectory(tmp_path / "taken")
    make_checkpoints(taken, 6)
    with pytest.raises(ConfigError, match=r"taken: already holds a run; resume it with --resume .*taken, or choose "
                                          r"another --out"):
        claim_run_dir(taken.root)
    _, lock = claim_run_dir(tmp_path / "fresh")  # taken again: released after the first claim
    lock.release()


def test_claiming_for_a_resume_refuses_newer_checkpoints_and_drops_later_metrics(tmp_path):
    run = RunDirectory(tmp_path / "run")
    make_checkpoints(run, 6, 12)
    run.config.write_text("{}")
    run.metrics.write_text("".join(json.dumps({"kind": "train", "iteration": i}) + "\n" for i in range(1, 13)))
    with pytest.raises(ConfigError, match=r"has a checkpoint newer \(iteration 12\) than the one resumed from "
                                          r"\(.*ckpt-00000006.npz, iteration 6\); resume into a new directory"):
        claim_run_dir(None, resumed_from=run.checkpoint_path(6), checkpoint_iteration=6)
    claimed, lock = claim_run_dir(None, resumed_from=run.checkpoint_path(12), checkpoint_iteration=12)
    lock.release()
    assert claimed.root == run.root.resolve()
    copy, lock = claim_run_dir(tmp_path / "copy", resumed_from=run.checkpoint_path(6), checkpoint_iteration=6)
    lock.release()
    assert [r["iteration"] for r in copy.read_metrics()] == [1, 2, 3, 4, 5, 6]


def test_config_files_in_json_or_toml_with_dashes_or_underscores(tmp_path):
    (tmp_path / "a.json").write_text('{"hidden-dim": 64, "lr": 0.01}')
    (tmp_path / "b.toml").write_text('hidden_dim = 64\ncell = "gru"\n')
    assert read_config_file(tmp_path / "a.json") == {"hidden_dim": 64, "lr": 0.01}
    assert read_config_file(tmp_path / "b.toml") == {"hidden_dim": 64, "cell": "gru"}


@pytest.mark.parametrize("name, content, message", [
    ("c.yaml", "a: 1", r"c.yaml: config files must be JSON \(.json\) or TOML \(.toml\), got '.yaml'"),
    ("missing.json", None, r"missing.json: file not found"),
    ("list.json", "[1]", r"list.json: expected an object of option names to values, got list"),
    ("bad.toml", "x = = 1", r"bad.toml: not valid TOML"),
    ("latin.json", b'{"a": "\xe9"}', r"latin.json: not UTF-8 text"),
])
def test_config_file_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_config_file(path)
