"""`captionkit compare` (and `train --resume`) on run directories that may be shared or crafted.

Runs are written by hand (compare reads only their files): escape sequences in config.json, unusable metrics records,
NaN and strings in summary.json, FIFOs where a run file belongs. Commands that could block on a FIFO run in a child
process with a timeout, so a regression fails instead of hanging.
"""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from captionkit.cli import main
from training_helpers import TINY, tiny_bundle

TRAIN = {"kind": "train", "epoch": 0, "learning_rate": 0.001, "elapsed": 0.1}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def child(*args, timeout=120):
    """`captionkit ARGS` in a child process; a failed test when it does not end within ``timeout`` seconds."""
    code = "import sys; from captionkit.cli import main; sys.exit(main())"
    try:
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"captionkit {' '.join(map(str, args))} did not end within {timeout} s")


def write_run(root, config, summary, metrics_lines):
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    (root / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    (root / "metrics.jsonl").write_bytes(b"\n".join(metrics_lines) + b"\n")
    return root


def record(**values):
    return json.dumps({**TRAIN, **values}).encode()


@pytest.fixture
def runs(tmp_path):
    plain = write_run(tmp_path / "plain", {"cell": "lstm", "hidden_dim": 12, "wordvec_dim": 8, "lr": 0.001},
                      {"iteration": 4, "num_iterations": 4, "elapsed": 2.0,
                       "best": {"metric": "CIDEr-D", "value": 0.5, "iteration": 4},
                       "val_metrics": {"CIDEr-D": 0.5, "loss": 2.0}},
                      [record(iteration=k, loss=3.0 - k / 2) for k in range(1, 5)])
    crafted = write_run(
        tmp_path / "crafted",
        {"cell": "\x1b]2;pwned\x07rnn", "hidden_dim": "\x1b[2J", "wordvec_dim": 8, "lr": "\x1b[31mred",
         "monitor": {"not": "a metric"}, "data": {"a": 1}},
        # NaN is not JSON: Python's parser reads it, strict parsers refuse it. Strings where numbers belong.
        '{"iteration": "many", "num_iterations": NaN, "elapsed": Infinity, "best": "top", '
        '"val_metrics": {"CIDEr-D": NaN, "BLEU-4": "x", "loss": 1.5}, "interrupted": "\\u001b[2J"}',
        [record(iteration=1, loss=2.0),
         b'{"kind": "train", "iteration": 2, "loss": {"deep": [1]}}',
         b'{"kind": "train", "iteration": 3, "loss": "low"}',
         b'{"kind": "train", "iteration": 4, "loss": NaN}',
         b'{"kind": "val", "iteration": 4, "CIDEr-D": 1e999}',
         b'{"kind": "train", "iteration": 5, "loss": 1.0, "\xff": 1}',
         b"[" * 100000 + b"]" * 100000,
         b"{" * 30000,
         record(iteration=6, loss=1.0)])
    return plain, crafted


def test_table_escapes_crafted_values_and_counts_unusable_records(runs, tmp_path):
    plain, crafted = runs
    result = invoke("compare", plain, crafted, "--no-plot")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b]2;pwned\\arnn" in result.output and "\\x1b[2J" in result.output and "\\x1b[31mred" in result.output
    assert f"{crafted / 'metrics.jsonl'}: 7 unusable record(s) skipped" in result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.startswith(("plain", "crafted"))}
    assert rows["plain"].split()[-3:] == ["4/4", "0:02", "finished"]
    # The crafted run's summary numbers are unusable: shown as absent, its one usable final score kept.
    assert "-/-" in rows["crafted"] and "1.500" in rows["crafted"]


def test_json_is_strict_with_null_for_non_finite_values(runs):
    plain, crafted = runs
    result = invoke("compare", plain, crafted, "--no-plot", "--json")
    assert result.exit_code == 0, result.output
    text = result.stdout if hasattr(result, "stdout") else result.output
    document = json.loads(text[text.index("{"):], parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    by_run = {row["run"]: row for row in document["runs"]}
    assert document["metric"] == "CIDEr-D"  # the crafted monitor (a dict) is no metric; the first run has none
    assert by_run["crafted"]["num_iterations"] is None and by_run["crafted"]["elapsed"] is None
    assert by_run["crafted"]["final"] == {"loss": 1.5}
    assert by_run["crafted"]["skipped_records"] == 7 and by_run["plain"]["skipped_records"] == 0
    assert by_run["plain"]["best"] == {"metric": "CIDEr-D", "value": 0.5, "iteration": 4}


def test_config_values_that_are_not_finite_are_null_in_json(tmp_path):
    a = write_run(tmp_path / "a", {"cell": "rnn", "lr": 0.1}, {}, [record(iteration=1, loss=1.0)])
    b = write_run(tmp_path / "b", {"cell": "rnn", "lr": 0.2}, {}, [record(iteration=1, loss=1.0)])
    (b / "config.json").write_text('{"cell": "rnn", "lr": NaN}')
    result = invoke("compare", a, b, "--no-plot", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output[result.output.index("{"):])
    assert [row["options"]["lr"] for row in document["runs"]] == [0.1, None]


@pytest.mark.parametrize("name", ["summary.json", "config.json"])
def test_compare_does_not_hang_on_a_fifo(runs, name):
    plain, _ = runs
    (plain / name).unlink()
    os.mkfifo(plain / name)
    done = child("compare", plain, "--no-plot")
    if name == "summary.json":
        assert done.returncode == 0, done.stderr
        assert "plain" in done.stdout
    else:  # config.json is what makes a directory a run
        assert done.returncode != 0 and "not a run directory (no config.json)" in done.stderr


def test_compare_refuses_metrics_linked_to_dev_zero_naming_the_file(runs):
    plain, _ = runs
    (plain / "metrics.jsonl").unlink()
    (plain / "metrics.jsonl").symlink_to("/dev/zero")
    done = child("compare", plain, "--no-plot")
    assert done.returncode != 0
    assert f"{plain / 'metrics.jsonl'}: is a device; a metrics file is read only from a regular file" in done.stderr


def test_train_resume_does_not_hang_on_a_fifo_summary(tmp_path):
    bundle = tiny_bundle(tmp_path / "bundle")
    options = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    done = child("train", "--data", bundle, "--out", tmp_path / "run", "--quiet", *options)
    assert done.returncode == 0, done.stderr
    (tmp_path / "run" / "summary.json").unlink()
    os.mkfifo(tmp_path / "run" / "summary.json")
    done = child("train", "--resume", tmp_path / "run")  # the run is finished: resuming reads its summary
    assert done.returncode == 0, done.stderr
    assert "is finished at iteration" in done.stderr
