"""Reliability, round two: one writer per run, crafted checkpoints refused before they allocate, training state and
stored options range-checked, half-written files of killed runs removed.

The concurrency tests race real processes on one directory; the allocation tests load crafted files in a child
process under an address-space limit that a valid file of the same kind loads under, so they cannot pass by luck.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from captionkit import train
from captionkit.checkpoint import CheckpointError, read_checkpoint
from captionkit.cli import main
from captionkit.locking import DirectoryLock, is_locked
from captionkit.runs import RunDirectory
from training_helpers import TINY, tiny_bundle
from conftest import TESTS_DIR

TESTS = TESTS_DIR
PER_EPOCH = 6  # the tiny bundle's 48 training captions in batches of 8


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny bundle and a finished run on it (2 epochs of PER_EPOCH iterations)."""
    root = tmp_path_factory.mktemp("reliability")
    bundle = tiny_bundle(root / "bundle")
    train(data=str(bundle), out=root / "run", handle_signals=False, **TINY)
    return root, bundle, root / "run"


def _latest(run):
    return RunDirectory(run).latest_checkpoint()


# ---------------------------------------------------------------------------------------------- one writer per run
RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from captionkit import train
    from training_helpers import TINY
    go = Path(sys.argv[1])
    while not go.exists():
        time.sleep(0.0005)
    options = dict(TINY, epochs=int(sys.argv[4]))
    try:
        if sys.argv[2] == "new":
            train(data=sys.argv[3], out=sys.argv[5], handle_signals=False, **options)
        else:
            train(resume=sys.argv[5], handle_signals=False, epochs=int(sys.argv[4]))
    except Exception as exc:
        print(type(exc).__name__, exc, file=sys.stderr)
        sys.exit(1)
""")


def _race(tmp_path, mode, bundle, target, epochs=(3, 3)):
    script = tmp_path / "racer.py"
    script.write_text(RACER.format(tests=str(TESTS)))
    go = tmp_path / f"go-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, str(script), str(go), mode, str(bundle), str(e), str(target)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for e in epochs]
    time.sleep(2.5)  # both have imported captionkit and wait for the go file
    go.write_text("")
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    return results


@pytest.mark.parametrize("attempt", range(4))
def test_two_new_runs_on_one_directory_one_is_refused(tmp_path, finished, attempt):
    _, bundle, _ = finished
    target = tmp_path / "run"
    results = _race(tmp_path, "new", bundle, target)
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 1], results
    refusal = next(err for _, err, code in results if code == 1)
    assert ("LockHeldError" in refusal and f"{target}: another captionkit process is writing this run (pid" in refusal
            or "already holds a run" in refusal), refusal
    records = RunDirectory(target).read_metrics()
    iterations = [r["iteration"] for r in records if r["kind"] == "train"]
    assert iterations == list(range(1, len(iterations) + 1))  # each iteration once, in order
    config = json.loads((target / "config.json").read_text())
    assert read_checkpoint(_latest(target)).config == config


@pytest.mark.parametrize("attempt", range(3))
def test_two_resumes_of_one_run_one_is_refused(tmp_path, finished, attempt):
    import shutil

    _, bundle, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    results = _race(tmp_path, "resume", bundle, copy, epochs=(4, 5))
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 1], results
    winner_epochs = next(e for e, (_, _, code) in zip((4, 5), results) if code == 0)
    records = [r["iteration"] for r in RunDirectory(copy).read_metrics() if r["kind"] == "train"]
    assert records == list(range(1, PER_EPOCH * winner_epochs + 1))
    config = json.loads((copy / "config.json").read_text())
    assert config["epochs"] == winner_epochs == read_checkpoint(_latest(copy)).config["epochs"]


def test_readers_work_while_a_run_is_owned_and_writers_are_refused(finished):
    root, _, run = finished
    with DirectoryLock(run, ".lock", what="run"):
        assert is_locked(run)
        assert run_cli("evaluate", run, "--json").exit_code == 0
        assert run_cli("sample", run, "--n", "2").exit_code == 0
        result = run_cli("train", "--resume", run, "--epochs", 3)
        assert result.exit_code == 1
        assert f"another captionkit process is writing this run (pid {os.getpid()} on " in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not is_locked(run)


def test_a_killed_owner_releases_the_run(tmp_path, finished):
    _, _, run = finished
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from captionkit.locking import DirectoryLock
        DirectoryLock({str(run)!r}, ".lock", what="run").acquire()
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert is_locked(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert not is_locked(run)


def test_half_written_files_of_a_killed_run_are_removed_on_resume(tmp_path, finished):
    import shutil

    _, _, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    leftovers = [copy / ".config.json.4242-0a1b2c3d.tmp", copy / ".summary.json.77-deadbeef.tmp",
                 copy / ".loss.png.5-01234567.tmp", copy / ".samples.png.5-89abcdef.tmp",
                 copy / "checkpoints" / ".ckpt-00000006.npz.9-aaaaaaaa.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    kept = copy / "notes.tmp"  # not a name captionkit's atomic writes use: not touched
    kept.write_text("mine")
    train(resume=copy, handle_signals=False, epochs=3)
    assert [p for p in leftovers if p.exists()] == [] and kept.exists()


# ---------------------------------------------------------------------------------------------- crafted checkpoints
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


def test_crafted_sizes_are_refused_before_allocating(tmp_path, finished):
    _, _, run = finished
    good = _latest(run)
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
    path = _state_change(_latest(run), tmp_path, name, change)
    with pytest.raises(CheckpointError, match=rf"{name}\.npz.*{message}"):
        read_checkpoint(path)


def test_commands_name_crafted_checkpoints_in_one_line(tmp_path, finished):
    _, _, run = finished
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    latest = _latest(copy)
    members, meta = _members(latest), _meta(latest)
    meta["config"]["data"] = {"x": 1}
    _write(latest, members, meta)
    for command in (["sample", copy], ["evaluate", copy], ["train", "--resume", copy, "--epochs", 4]):
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
    latest = _latest(copy)
    members, meta = _members(latest), _meta(latest)
    meta["training"]["epoch"] = 1
    _write(latest, members, meta)
    result = run_cli("train", "--resume", copy, "--epochs", 3)
    assert result.exit_code == 1 and "'training.epoch' is 1, but iteration 12 at 6 iterations per epoch is in epoch 2" \
        in result.output


# ---------------------------------------------------------------------------------------------- options that cannot fit
def test_a_model_too_large_for_the_machine_is_refused_before_allocating(finished):
    _, bundle, _ = finished
    result = run_cli("train", "--data", bundle, "--hidden-dim", 10**9, "--out", bundle.parent / "huge")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "hidden_dim=1000000000" in result.output and "GiB of parameters" in result.output
    assert "MemoryError" not in result.output


def test_a_batch_too_large_for_the_machine_is_refused_before_anything_is_written(finished):
    _, bundle, _ = finished
    out = bundle.parent / "huge-batch"
    result = run_cli("train", "--data", bundle, "--batch-size", 10**8, "--out", out)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "batch_size=100000000: one training step on captions of" in result.output
    assert "GiB: more than half of this machine's" in result.output and not out.exists()


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_the_step_estimate_bounds_what_a_step_allocates(backend):
    """tracemalloc sees every numpy array a loss() call makes: their peak must stay below the model's estimate, for
    every registered cell and shapes where the vocabulary, the hidden state or the batch dominates."""
    import tracemalloc

    from captionkit.cells import available_cells
    from captionkit.model import CaptioningRNN

    for cell in available_cells():
        for N, T, V, D, W, H in [(64, 12, 40, 20, 16, 24), (32, 9, 300, 10, 8, 64), (100, 17, 1004, 64, 32, 128)]:
            words = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(V - 3)}}
            model = CaptioningRNN(words, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell, backend=backend,
                                  seed=0)
            rng = np.random.default_rng(0)
            features = rng.standard_normal((N, D))
            captions = rng.integers(3, V, size=(N, T))
            model.loss(features, captions)  # first-call caches and thread pools are not the step's
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                model.loss(features, captions)
                peak = tracemalloc.get_traced_memory()[1] - before
            finally:
                tracemalloc.stop()
            estimate = model.training_step_bytes(N, T)
            assert 0.1 * estimate < peak < estimate, (cell, N, T, V, H, peak, estimate)


def test_the_solver_refuses_a_batch_beyond_memory_naming_it(monkeypatch):
    from captionkit import model as model_module
    from captionkit.model import CaptioningRNN
    from captionkit.solver import CaptioningSolver

    words = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3}
    model = CaptioningRNN(words, input_dim=4, wordvec_dim=4, hidden_dim=4, seed=0)
    data = {"train_captions": np.ones((10, 17), np.int32), "train_image_idxs": np.zeros(10, np.int32),
            "train_features": np.zeros((1, 4)), "train_urls": np.array(["x.jpg"])}
    step = model.training_step_bytes(1000, 17)
    monkeypatch.setattr(model_module, "_physical_memory", lambda: 2 * step + 2)  # 1000 captions just fit
    CaptioningSolver(model, data, batch_size=1000)
    with pytest.raises(ValueError, match=r"^batch_size=1001: one training step on captions of 17 ids would hold "
                                         r"about .* GiB: more than half of this machine's 0 GiB of memory$"):
        CaptioningSolver(model, data, batch_size=1001)


def test_config_files_that_are_not_small_regular_files(tmp_path):
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    result = run_cli("train", "--config", zero)
    assert result.exit_code != 0 and "zero.json: not a regular file" in result.output
    big = tmp_path / "big.json"
    big.write_text("[" + " " * 2**21 + "]")
    result = run_cli("train", "--config", big)
    assert result.exit_code != 0 and "big.json: larger than 1048576 bytes" in result.output
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    result = run_cli("train", "--config", nested)
    assert result.exit_code != 0 and "nested.json: not valid JSON" in result.output
