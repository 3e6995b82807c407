"""`--checkpoint best|latest|FILE` of `sample`, `evaluate` and `caption`, on a tiny run made by `captionkit train`
whose best validation came before its last.

The oracles are the run's own records: metrics.jsonl (which validation scored best, and its score) and the
checkpoint files (read_checkpoint's iteration).
"""
import json
import shutil

import pytest
from click.testing import CliRunner

from captionkit.checkpoint_schema import read_checkpoint
from captionkit.cli import main
from captionkit.runs import RunDirectory
from training_helpers import TINY, tiny_bundle

OPTIONS = {**TINY, "seed": 0}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-epoch run that validated twice; its first validation scored the better CIDEr-D."""
    root = tmp_path_factory.mktemp("checkpoint_option")
    bundle = tiny_bundle(root / "bundle")
    flags = [item for name, value in OPTIONS.items() for item in (f"--{name.replace('_', '-')}", value)]
    result = invoke("train", "--data", bundle, "--out", root / "run", "-q", *flags)
    assert result.exit_code == 0, result.output
    return RunDirectory(root / "run")


def best_validation(run):
    return max((r for r in run.read_metrics() if r["kind"] == "val"), key=lambda r: r["CIDEr-D"])


def evaluated(run, *options):
    result = invoke("evaluate", run.root, "--json", "--max-images", 3, *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr.strip()


def test_the_run_has_a_best_checkpoint_older_than_its_latest(run):
    assert best_validation(run)["iteration"] < run.list_checkpoints()[-1][0]


def test_run_means_its_best_checkpoint_and_says_so(run):
    best = best_validation(run)
    scores, said = evaluated(run)
    assert (scores["checkpoint"], scores["iteration"]) == (str(run.best_checkpoint), best["iteration"])
    assert said == (f"using {run.best_checkpoint} (best val CIDEr-D {best['CIDEr-D']:.4f} at iteration "
                    f"{best['iteration']})")
    assert evaluated(run, "--checkpoint", "best") == (scores, said)


def test_latest_and_an_explicit_file(run):
    latest_iteration, latest = run.list_checkpoints()[-1]
    scores, said = evaluated(run, "--checkpoint", "latest")
    assert (scores["checkpoint"], scores["iteration"]) == (str(latest), latest_iteration)
    assert said == f"using {latest} (latest, iteration {latest_iteration})"
    older_iteration, older = run.list_checkpoints()[0]
    assert older_iteration < latest_iteration
    for given in (older.name, older):
        scores, said = evaluated(run, "--checkpoint", given)
        assert (scores["checkpoint"], scores["iteration"]) == (str(older), read_checkpoint(older).iteration)


def test_sample_takes_the_same_choice(run):
    latest_iteration, latest = run.list_checkpoints()[-1]
    result = invoke("sample", run.root, "--n", 2, "--seed", 1, "--checkpoint", "latest")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{latest} (iteration {latest_iteration}): 2 val images")
    assert result.stderr == f"using {latest} (latest, iteration {latest_iteration})\n"


def test_a_run_without_best_uses_its_latest_and_refuses_best(run, tmp_path):
    copy = RunDirectory(shutil.copytree(run.root, tmp_path / "copy"))
    copy.best_checkpoint.unlink()
    latest_iteration, latest = copy.list_checkpoints()[-1]
    scores, said = evaluated(copy)
    assert (scores["checkpoint"], scores["iteration"]) == (str(latest), latest_iteration)
    assert said == f"using {latest} (latest, iteration {latest_iteration}; the run has no best checkpoint)"
    refused = invoke("evaluate", copy.root, "--checkpoint", "best")
    assert refused.exit_code == 1
    assert refused.output == (f"Error: {copy.root}: has no best checkpoint ({copy.best_checkpoint} is written at the "
                              "run's first validation); choose checkpoint 'latest'\n")


@pytest.mark.parametrize("command", [("evaluate",), ("sample",), ("caption", "picture.png")])
def test_a_bad_value_is_one_line_naming_it(run, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if command[0] == "caption":
        (tmp_path / "picture.png").write_bytes(b"")  # never read: the checkpoint is chosen first
    result = invoke(command[0], run.root, *command[1:], "--checkpoint", "bset")
    assert result.exit_code == 1
    assert result.output == (f"Error: checkpoint 'bset': not 'best', 'latest' or a checkpoint file (no file bset nor "
                             f"{run.checkpoints / 'bset'})\n")


@pytest.mark.parametrize("command", ["evaluate", "sample", "caption"])
def test_every_command_taking_run_documents_the_option(command):
    result = invoke(command, "--help")
    assert "--checkpoint best|latest|FILE" in result.output
    assert "Default: best when the run has one, else latest." in " ".join(result.output.split())
