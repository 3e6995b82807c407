"""One writer per run: two processes started together on one run directory, one is refused; readers work while a
run is owned; a killed owner releases it; and half-written files of killed runs are removed on resume.

The concurrency tests race real processes on one directory (crafted checkpoints are in test_crafted_checkpoints.py).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from captionkit import train
from captionkit.checkpoint import read_checkpoint
from captionkit.locking import DirectoryLock, is_locked
from captionkit.runs import RunDirectory
from conftest import TESTS_DIR
from training_helpers import run_cli

PER_EPOCH = 6  # the tiny bundle's 48 training captions in batches of 8


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
    script.write_text(RACER.format(tests=str(TESTS_DIR)))
    go = tmp_path / f"go-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, str(script), str(go), mode, str(bundle), str(e), str(target)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for e in epochs]
    time.sleep(2.5)  # both have imported captionkit and wait for the go file
    go.write_text("")
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    return results


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(4))
def test_two_new_runs_on_one_directory_one_is_refused(tmp_path, finished, attempt):
    _, bundle, _ = finished
    target = tmp_path / "run"
    results = _race(tmp_path, "new", bundle, target)
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 1], results
    refusal = next(err for _, err, code in results if code == 1)
    # The loser names the winner's pid, or, when it looks in the instant between the winner's lock and the line that
    # records it, says the owner has not recorded itself yet (seen in a CI dry run); or it finds the finished run.
    held = f"{target}: another captionkit process is writing this run ("
    named = held + "pid" in refusal or held + "a process that has not recorded" in refusal
    assert ("LockHeldError" in refusal and named or "already holds a run" in refusal), refusal
    records = RunDirectory(target).read_metrics()
    iterations = [r["iteration"] for r in records if r["kind"] == "train"]
    assert iterations == list(range(1, len(iterations) + 1))  # each iteration once, in order
    config = json.loads((target / "config.json").read_text())
    assert read_checkpoint(_latest(target)).config == config


@pytest.mark.slow
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


@pytest.mark.slow
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
