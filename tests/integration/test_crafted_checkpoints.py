"""Crafted checkpoints are refused before they allocate, and crafted training state and stored options are
named: the sizes a checkpoint declares, its optimiser state, its training position and its stored options, each
range-checked against the run it claims to belong to.

The allocation tests load crafted files in a child process under an address-space limit that a valid file of the
same kind loads under, so they cannot pass by luck.
"""
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from captionkit.checkpoint import CheckpointError, read_checkpoint
from captionkit.runs import RunDirectory
from training_helpers import run_cli


def _members(path):
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def _write(path, members, meta=None, compressed=()):
    """An npz of ``members`` (meta replaced by ``meta`` if given); members named in ``compressed`` deflated."""
    if meta is not None:
        members = dict(members, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in members.items():
            import io

            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            method = zipfile.ZIP_DEFLATED if key in compressed else zipfile.ZIP_STORED
            archive.writestr(zipfile.ZipInfo(f"{key}.npy"), buffer.getvalue(), compress_type=method)
    return path


def _meta(path):
    return json.loads(_members(path)["meta"].tobytes())


def _load_under_limit(path, limit_gib=1.5):
    """(exit code, output) of reading the checkpoint in a child process whose address space is capped."""
    code = textwrap.dedent(f"""
        import resource, sys
        limit = int({limit_gib} * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from captionkit.checkpoint import CheckpointError, read_checkpoint
        try:
            read_checkpoint({str(path)!r})
        except CheckpointError as exc:
            print("CheckpointError:", exc)
            sys.exit(3)
        print("loaded")
    """)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.slow
def test_crafted_sizes_are_refused_before_allocating(tmp_path, finished):
    _, _, run = finished
    good = RunDirectory(run).latest_checkpoint()
    assert _load_under_limit(good) == (0, "loaded\n")  # the limit leaves room for a real load

    # 1. A model of hidden_dim 20000 declared in the metadata of a small file.
    meta = _meta(good)
    meta["model"]["hidden_dim"] = 20000
    code, output = _load_under_limit(_write(tmp_path / "wide.npz", _members(good), meta))
    assert code == 3 and "'param/W_proj' has shape (16, 12), expected (16, 20000)" in output, output

    # 2. A loss history that inflates to 2 GiB from a few kilobytes.
    members = dict(_members(good), loss_history=np.zeros(2**28))
    path = _write(tmp_path / "inflating.npz", members, compressed={"loss_history"})
    assert path.stat().st_size < 4 * 2**20
    code, output = _load_under_limit(path)
    assert code == 3 and "member 'loss_history' is compressed and declares 2147483648 bytes" in output, output

    # 3. A stored member whose header declares far more than the file holds.
    members = _members(good)
    buffer_header = {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)}
    import io

    raw = io.BytesIO()
    np.lib.format.write_array_header_1_0(raw, buffer_header)
    with zipfile.ZipFile(tmp_path / "lying.npz", "w") as archive:
        for key, value in members.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, value, allow_pickle=False)
            payload = raw.getvalue() + b"\0" * 64 if key == "param/W_embed" else data.getvalue()
            archive.writestr(f"{key}.npy", payload)
    code, output = _load_under_limit(tmp_path / "lying.npz")
    assert code == 3 and "member 'param/W_embed' declares (100000, 100000) float32 (40000000000 bytes) but holds 64" \
        in output, output


def _state_change(good, tmp_path, name, change):
    members, meta = _members(good), _meta(good)
    change(members, meta)
    return _write(tmp_path / f"{name}.npz", members, meta)


def _scalar(key, value):
    def change(members, meta):
        for conf in meta["training"]["optim_scalars"].values():
            conf[key] = value
    return change


def _negative_v(members, meta):
    members["optim/W_embed/v"] = -np.abs(members["optim/W_embed/v"]) - 1


def _training(key, value):
    def change(members, meta):
        meta["training"][key] = value
    return change


@pytest.mark.parametrize("name, change, message", [
    ("negative_v", _negative_v, r"optimiser state of 'W_embed' cannot be trained from: 'v' is an array \(float32, "
                                r"\(44, 8\)\), expected values >= 0"),
    ("lr_true", _scalar("learning_rate", True), r"'learning_rate' is True, expected a number"),
    ("beta1_one", _scalar("beta1", 1), r"'beta1' is 1, expected a number in \[0, 1\)"),
    ("t_negative", _scalar("t", -5), r"'t' is -5, expected an integer >= 0"),
    ("unknown_key", _scalar("nesterov", 1), r"'nesterov' is no setting of captionkit's update rules"),
    ("huge_iteration", _training("iteration", 10**30), r"'training.iteration' is 10{30}, expected an integer >= 0 "
                                                       r"and below 2\*\*53"),
    ("epoch_ahead", _training("epoch", 10**6), r"'training.epoch' is 1000000 after only 12 iterations"),
    ("short_history", lambda m, meta: m.update(loss_history=m["loss_history"][:-1]),
     r"'loss_history' has shape \(11,\), expected \(12,\)"),
    ("stored_data", lambda m, meta: meta["config"].update(data={"x": 1}),
     r"\(stored config\): option 'data' is \{'x': 1\}, expected a path or null"),
    ("stored_lr", lambda m, meta: meta["config"].update(lr="fast"),
     r"\(stored config\): option 'lr' is 'fast', expected a positive finite number"),
])
def test_crafted_training_state_is_named(tmp_path, finished, name, change, message):
    _, _, run = finished
    path = _state_change(RunDirectory(run).latest_checkpoint(), tmp_path, name, change)
    with pytest.raises(CheckpointError, match=rf"{name}\.npz.*{message}"):
        read_checkpoint(path)


def test_commands_name_crafted_checkpoints_in_one_line(tmp_path, finished):
    _, _, run = finished
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    latest = RunDirectory(copy).latest_checkpoint()
    members, meta = _members(latest), _meta(latest)
    meta["config"]["data"] = {"x": 1}
    _write(latest, members, meta)
    for command in (["sample", copy, "--checkpoint", "latest"], ["evaluate", copy, "--checkpoint", "latest"],
                    ["train", "--resume", copy, "--epochs", 4]):
        result = run_cli(*command)
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert "(stored config): option 'data'" in result.output and "unexpected" not in result.output


def test_a_checkpoint_beyond_the_plan_or_out_of_step_is_refused(tmp_path, finished):
    import shutil

    _, _, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = run_cli("train", "--resume", copy, "--epochs", 1)  # the checkpoint is at iteration 12, after 2 epochs
    assert result.exit_code == 1
    assert "the checkpoint is at iteration 12, beyond the 6 iterations of this run (1 epochs of 6)" in result.output
    latest = RunDirectory(copy).latest_checkpoint()
    members, meta = _members(latest), _meta(latest)
    meta["training"]["epoch"] = 1
    _write(latest, members, meta)
    result = run_cli("train", "--resume", copy, "--epochs", 3)
    assert result.exit_code == 1 and "'training.epoch' is 1, but iteration 12 at 6 iterations per epoch is in epoch 2" \
        in result.output
