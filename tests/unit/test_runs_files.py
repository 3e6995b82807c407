"""captionkit.runs: a run's files read as untrusted data (FIFOs, devices, hostile metrics records, oversized files).

A FIFO opened for reading blocks until a writer comes, so each FIFO test runs its reader in a child process with a
timeout: a regression fails the test instead of hanging the suite.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from captionkit import runs
from captionkit.checkpoint_schema import CheckpointError
from captionkit.resume import initial_checkpoint
from captionkit.runs import ConfigError, RunDirectory, read_config_file

GOOD_TRAIN = {"kind": "train", "iteration": 1, "epoch": 0, "loss": 2.5, "learning_rate": 0.001, "elapsed": 0.1}
GOOD_VAL = {"kind": "val", "iteration": 2, "epoch": 0, "images": 6, "seconds": 0.2, "CIDEr-D": 0.4, "loss": 2.0}


def _child(code, timeout=60):
    """Run ``code`` in a fresh interpreter; its stdout, or a failed test when it has not ended within ``timeout``."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the reader did not return within {timeout} s (it waits on the FIFO)")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_hostile_metrics_records_are_skipped_and_counted(tmp_path):
    run = RunDirectory(tmp_path)
    lines = [
        json.dumps(GOOD_TRAIN).encode(),
        b'{"kind": "train", "iteration": 3, "loss": {"nested": 1}}',    # a dict where a number belongs
        b'{"kind": "train", "iteration": 4, "loss": "low"}',            # a string
        b'{"kind": "train", "iteration": 5, "loss": NaN}',              # NaN, which training never writes
        b'{"kind": "val", "iteration": 6, "CIDEr-D": Infinity}',
        b'{"kind": "train", "iteration": 7, "loss": true}',             # a bool is not a number here
        b'{"kind": "train", "iteration": "8", "loss": 1.0}',            # iteration as text
        b'{"kind": "train", "iteration": 9, "loss": 1.0, "caf\xe9": 1}',  # bad UTF-8
        b"[" * 100000 + b"]" * 100000,                                  # longer than any record: not kept
        b"[" * 30000 + b"]" * 30000,                                    # nesting past the parser's recursion
        b'{"kind": "debug", "iteration": 10}',                          # a kind training does not write
        b"[1, 2]",
        json.dumps(GOOD_VAL).encode(),
        b"",                                                            # an empty line is not a record
        b'{"kind": "train", "iteration": 11, "lo',                      # cut short by a crash
    ]
    run.metrics.write_bytes(b"\n".join(lines))
    records, skipped = run.read_metrics_counted()
    assert records == [GOOD_TRAIN, GOOD_VAL]
    assert skipped == 12
    assert run.read_metrics() == [GOOD_TRAIN, GOOD_VAL]


def test_missing_metrics_read_as_none(tmp_path):
    assert RunDirectory(tmp_path).read_metrics_counted() == ([], 0)


def test_metrics_from_a_device_or_oversized_are_refused_naming_the_file(tmp_path, monkeypatch):
    run = RunDirectory(tmp_path)
    run.metrics.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"metrics\.jsonl: is a device; a metrics file is read only from a regular"):
        run.read_metrics()
    run.metrics.unlink()
    run.metrics.write_text((json.dumps(GOOD_TRAIN) + "\n") * 10)
    monkeypatch.setattr(runs, "MAX_METRICS_BYTES", 5 * len(json.dumps(GOOD_TRAIN)))
    with pytest.raises(ValueError, match=r"metrics\.jsonl: a metrics file is at most"):
        run.read_metrics()


def test_one_endless_metrics_line_is_skipped_and_the_next_line_read(tmp_path):
    run = RunDirectory(tmp_path)
    run.metrics.write_bytes(b"1" * (3 * 2**16 + 10) + b"\n" + json.dumps(GOOD_TRAIN).encode() + b"\n")
    assert run.read_metrics_counted() == ([GOOD_TRAIN], 1)


@pytest.mark.parametrize("name", ["summary.json", "config.json", "metrics.jsonl"])
def test_a_fifo_among_the_run_files_does_not_hang(tmp_path, name):
    os.mkfifo(tmp_path / name)
    out = _child(f"""
        from captionkit.runs import RunDirectory
        run = RunDirectory({str(tmp_path)!r})
        print(run.read_json(run.summary), run.read_json(run.config))
        try:
            run.read_metrics()
        except ValueError as exc:
            print(exc)
    """)
    if name == "metrics.jsonl":
        assert "metrics.jsonl: is a FIFO; a metrics file is read only from a regular file" in out
    else:
        assert out.startswith("{} {}")  # a FIFO reads as a missing record, as a crash mid-write would


def test_a_summary_linked_to_dev_zero_reads_as_missing(tmp_path):
    run = RunDirectory(tmp_path)
    run.summary.symlink_to("/dev/zero")
    assert run.read_json(run.summary) == {}


def test_a_config_fifo_is_refused_naming_it(tmp_path):
    os.mkfifo(tmp_path / "options.json")
    out = _child(f"""
        from captionkit.runs import ConfigError, read_config_file
        try:
            read_config_file({str(tmp_path / 'options.json')!r})
        except ConfigError as exc:
            print(exc)
    """)
    assert "options.json: is a FIFO; a config file is read only from a regular file" in out


def test_config_files_are_read_bounded(tmp_path):
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ConfigError, match=r"nested\.json: not valid JSON \(nested too deeply\)"):
        read_config_file(nested)
    good = tmp_path / "good.json"
    good.write_text('{"hidden-dim": 16, "epochs": 2}')
    assert read_config_file(good) == {"hidden_dim": 16, "epochs": 2}


def test_partial_files_are_recognised_by_safeio_s_one_pattern(tmp_path):
    run = RunDirectory(tmp_path)
    run.checkpoints.mkdir()
    partial = run.checkpoints / ".ckpt-00000004.npz.123-0123abcd.tmp"
    kept = run.checkpoints / "ckpt-00000004.npz"
    partial.write_bytes(b"x")
    kept.write_bytes(b"y")
    run.remove_partial_files()
    assert not partial.exists() and kept.exists()


@pytest.mark.parametrize("damage", ["corrupt", "fifo", "dangling link"])
def test_init_from_refuses_an_unusable_best_checkpoint(tmp_path, damage):
    run = RunDirectory(tmp_path)
    run.checkpoints.mkdir(parents=True)
    latest = run.checkpoint_path(8)
    latest.write_bytes(b"PK\x03\x04 not really")  # never read: the refusal comes first
    if damage == "corrupt":
        run.best_checkpoint.write_bytes(b"not a zip")
    elif damage == "fifo":
        os.mkfifo(run.best_checkpoint)
    else:
        run.best_checkpoint.symlink_to(tmp_path / "gone.npz")
    with pytest.raises(CheckpointError) as caught:
        initial_checkpoint(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{run.best_checkpoint}: ")
    assert "starts from the run's best checkpoint, best.npz, which cannot be used" in message
    assert f"pass --init-from {latest}" in message
