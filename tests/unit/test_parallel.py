"""captionkit.parallel: the thread pool (results in order, errors after every task, nesting, forks), how a batch is
cut into shards, the thread count and its setting, and pinning threads to cores (probed in child processes)."""
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from captionkit import kernels, parallel

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")


# ---------------------------------------------------------------------- captionkit.parallel itself


def test_shards_are_contiguous_near_equal_and_never_too_small(threads):
    threads(3)
    assert parallel.shards(14) == [slice(0, 5), slice(5, 10), slice(10, 14)]  # larger shards first
    assert parallel.shards(10) == [slice(0, 5), slice(5, 10)]  # three shards would leave one under 4 rows
    assert parallel.shards(7) == [slice(0, 7)]
    assert parallel.shards(8) == [slice(0, 4), slice(4, 8)]
    assert parallel.shards(0) == [slice(0, 0)]
    threads(1)
    assert parallel.shards(1000) == [slice(0, 1000)]


@pytest.mark.slow
def test_run_returns_results_in_order_and_raises_after_every_task_finished(threads):
    threads(3)
    assert parallel.run([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    finished = threading.Event()

    def slow():
        finished.wait(0.2)
        finished.set()
        return "slow"

    def broken():
        raise RuntimeError("shard failed")

    with pytest.raises(RuntimeError, match="shard failed"):
        parallel.run([broken, slow])
    assert finished.is_set()


def test_run_nested_inside_a_task_does_not_wait_for_the_busy_pool(threads):
    threads(2)
    inner = lambda: parallel.run([lambda: "a", lambda: "b"])  # noqa: E731
    # The second outer task runs on the pool's only worker and asks the pool for more: it must not deadlock.
    assert parallel.run([inner, inner]) == [["a", "b"], ["a", "b"]]


@pytest.mark.slow
def test_a_forked_child_gets_a_working_pool(threads):
    threads(2)
    parallel.run([lambda: 1, lambda: 2])  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if the pool runs tasks, and die of SIGALRM rather than hang
        signal.alarm(20)
        try:
            os._exit(0 if parallel.run([lambda: 1, lambda: 2]) == [1, 2] else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_refuses_non_positive_integers(threads, bad):
    with pytest.raises(ValueError, match="count must be a positive integer"):
        parallel.set_num_threads(bad)


@pytest.mark.slow
def test_thread_count_comes_from_the_environment():
    code = "from captionkit import parallel; print(parallel.get_num_threads())"
    run = lambda env: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                     env={**os.environ, **env})
    if kernels.blas().startswith("OpenBLAS"):
        assert run({"OPENBLAS_NUM_THREADS": "1"}).stdout.strip() == "1"
        assert run({"OPENBLAS_NUM_THREADS": "1", "CAPTIONKIT_NUM_THREADS": "3"}).stdout.strip() == "3"
        bad = run({"CAPTIONKIT_NUM_THREADS": "many"})
        assert bad.returncode != 0 and "CAPTIONKIT_NUM_THREADS must be a positive integer, got 'many'" in bad.stderr
        bad = run({"CAPTIONKIT_PIN_THREADS": "no"})
        assert bad.returncode != 0
        assert "CAPTIONKIT_PIN_THREADS must be 0 (let the system place threads) or 1, got 'no'" in bad.stderr


PINNING_PROBE = """
import json, os, sys
from captionkit import parallel
threads, narrow = int(sys.argv[1]), sys.argv[2] == "narrow"
parallel.set_num_threads(threads)
parallel.run([lambda: 0] * threads)  # the pool and its pinned workers exist from here on
if narrow:  # the caller keeps itself to its last core
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
own = os.sched_getaffinity(0)
cores = parallel.run([lambda: sorted(os.sched_getaffinity(0))] * threads)
print(json.dumps([sorted(own), cores, os.sched_getaffinity(0) == own]))
"""


def pinning_probe(threads, narrow=False, **env):
    """(the probe thread's cores, each task's cores in a run, whether the probe thread's cores were restored)."""
    environment = {k: v for k, v in os.environ.items() if k != "CAPTIONKIT_PIN_THREADS"}
    done = subprocess.run([sys.executable, "-c", PINNING_PROBE, str(threads), "narrow" if narrow else "whole"],
                          capture_output=True, text=True, env={**environment, **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")


@pytest.mark.slow
@needs_affinity
def test_shards_run_on_cores_of_their_own_when_there_is_a_thread_per_core():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to share out")
    own, seen, restored = pinning_probe(len(cores))
    assert own == cores
    assert sorted(core for mask in seen for core in mask) == cores and all(len(mask) == 1 for mask in seen)
    assert restored  # the calling thread may run anywhere again once run() returns


@pytest.mark.slow
@needs_affinity
def test_a_caller_that_narrowed_its_own_cores_is_left_on_them():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to share out")
    own, seen, restored = pinning_probe(len(cores), narrow=True)
    assert own == [cores[-1]] and seen[0] == [cores[-1]] and restored


@pytest.mark.slow
@needs_affinity
@pytest.mark.parametrize("case", ["switched off", "more threads than cores"])
def test_threads_are_left_to_the_scheduler_when_pinning_is_off_or_cores_do_not_match(case):
    cores = sorted(os.sched_getaffinity(0))
    if case == "switched off":
        own, seen, restored = pinning_probe(len(cores), CAPTIONKIT_PIN_THREADS="0")
    else:
        own, seen, restored = pinning_probe(len(cores) + 1)
    assert restored and all(mask == cores for mask in seen)


# ---------------------------------------------------------------------- the allocator setting


@pytest.mark.slow
def test_parallel_works_without_the_compiled_kernels():
    # A numpy-only install: captionkit._ext cannot be imported (None in sys.modules makes the import fail). The thread
    # module is a leaf, so it still answers, on one thread, instead of raising through the kernels.
    code = ("import sys; sys.modules['captionkit._ext'] = None\n"
            "from captionkit import parallel\n"
            "print(parallel.get_num_threads(), parallel.run([lambda: 'a', lambda: 'b']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "['a',", "'b']"]
