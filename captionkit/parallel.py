"""Threads for the compiled backend: a batch is cut into shards of rows, one per core, run side by side.

The products of a captioning step are skinny (a batch of 25-50 rows against 512 x 512 matrices), and a BLAS that
splits each of them over two cores spends much of its time handing work around. The compiled kernels therefore run
their BLAS on one thread, and :class:`captionkit.model.CaptioningRNN` splits its batch instead: every shard does the
whole forward and backward pass on its own core, and the shards' gradients are summed (training) or their captions
stacked (decoding). The kernels release the GIL, so shards on Python threads run truly in parallel.

The number of threads is ``CAPTIONKIT_NUM_THREADS`` when set, else the thread count the kernels' OpenBLAS was
configured with (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, or the cores this process may use), or
:func:`set_num_threads`. Results depend on it through the order of the gradient sums, so bit-identical reruns need
the same count. When the kernels run on scipy's BLAS, whose threads captionkit cannot set, captionkit uses one
thread and leaves that BLAS its own, and so it does without the compiled kernels (a numpy-only install). This
module imports nothing of captionkit's but the compiled leaf ``captionkit._ext``, which it asks for that count.

Inside :func:`run` every other BLAS of the process (numpy's, scipy's) runs on one thread, so that a cell written
with numpy's matmul, running in a shard, multiplies on its own core instead of waking a second thread pool whose
idle workers spin on the cores the shards need (threadpoolctl finds and sets those libraries).

When there are as many threads as cores this process may use (the default), each shard runs on a core of its own:
the pool's threads are pinned to one core each and the calling thread to the remaining one for the length of a
:func:`run`, its own core set restored after. Left to itself, Linux wakes a worker that slept through a pause on
the core of the thread that woke it, and the two shards then share one core for tens of milliseconds until the load
balancer parts them (docs/benchmarks.md). ``CAPTIONKIT_PIN_THREADS=0`` turns pinning off.
"""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

__all__ = ["get_num_threads", "map_shards", "rescan_blas_libraries", "run",
           "set_num_threads", "shards", "start"]

_lock = threading.Lock()
_num_threads = None  # decided on first use
_pool, _pool_workers = None, 0  # the executor and its number of workers
_pinned_cpus = None  # (calling thread's core, workers' cores...) while the pool's threads are pinned, else None
_calling_core_taken = threading.Lock()  # held by the one caller of run() that is pinned to _pinned_cpus[0]
_worker = threading.local()  # .busy is set on the pool's threads while they run a task
_blas_lock = threading.Lock()
_blas_libraries = None  # threadpoolctl's controllers of the BLAS libraries loaded, found when first needed
_blas_callers, _blas_restore = 0, []  # run() calls under way, and the thread counts to restore after the last


def _forget_pool_after_fork():
    """A forked child has none of the parent's threads; a pool that believes it has them would never run a task."""
    global _pool, _pool_workers, _pinned_cpus, _lock, _calling_core_taken, _blas_lock, _blas_callers, _blas_restore
    _pool, _pool_workers, _pinned_cpus, _lock, _calling_core_taken = None, 0, None, threading.Lock(), threading.Lock()
    _blas_lock, _blas_callers, _blas_restore = threading.Lock(), 0, []


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _kernels_blas_threads():
    """The thread count the compiled kernels' OpenBLAS was configured with; None when the kernels are not built
    (a numpy-only install) or run a BLAS whose threads captionkit does not control."""
    try:
        from captionkit import _ext  # the compiled leaf, imported when first asked: importing it binds the BLAS
    except ImportError:
        return None
    return _ext.configured_blas_threads


def _default_num_threads():
    _pinning_allowed()  # a bad CAPTIONKIT_PIN_THREADS is refused as early as a bad thread count
    configured = _kernels_blas_threads()
    if configured is None:  # no compiled kernels, or a BLAS whose thread pool captionkit does not control
        return 1
    value = os.environ.get("CAPTIONKIT_NUM_THREADS")
    if value is None:
        return configured
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"CAPTIONKIT_NUM_THREADS must be a positive integer, got {value!r}")
    return count


def get_num_threads():
    """How many threads the compiled backend runs a batch on."""
    global _num_threads
    with _lock:
        if _num_threads is None:
            _num_threads = _default_num_threads()
        return _num_threads


def set_num_threads(count):
    """Run the compiled backend's batches on ``count`` threads from now on; returns the previous count."""
    global _num_threads
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"set_num_threads: count must be a positive integer, got {count!r}")
    previous = get_num_threads()
    with _lock:
        _num_threads = count
    return previous


def shards(rows, min_rows=4):
    """Slices that cut ``rows`` rows into as many near-equal shards as there are threads, none under min_rows."""
    count = max(1, min(get_num_threads(), rows // min_rows))
    # Larger shards first: run() gives the first to the calling thread, which starts at once while the others wake.
    bounds = [-(-rows * i // count) for i in range(count + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(count)]


def map_shards(rows, task, min_rows=4):
    """``[task(rows_slice), ...]`` over the :func:`shards` of ``rows`` rows (none under ``min_rows``), in order, run
    side by side by :func:`run`."""
    return run([lambda part=part: task(part) for part in shards(rows, min_rows)])


def run(tasks):
    """Call each of ``tasks`` (functions of no argument) on its own thread, the first on this one; their results.

    An exception from any task is raised here, after every task has finished. Called from a task that is itself
    running on the pool, it runs the tasks one after the other on that thread: waiting for the pool from inside it
    could wait for ever.
    """
    with _other_blas_on_one_thread():
        if len(tasks) == 1 or getattr(_worker, "busy", False):
            return [task() for task in tasks]
        return _run_on_pool(tasks)


def _run_on_pool(tasks):
    pool, cores = _pool_for(len(tasks) - 1)
    futures = [pool.submit(_as_worker, task) for task in tasks[1:]]
    try:
        # Callers running at the same time (a server's threads, say) are not all pinned to one core: the first is.
        if cores is not None and _calling_core_taken.acquire(blocking=False):
            try:
                first = _pinned_call(tasks[0], cores)
            finally:
                _calling_core_taken.release()
        else:
            first = tasks[0]()
    finally:
        wait(futures)  # no task may outlive the call, even when one fails
    return [first] + [future.result() for future in futures]


def _pool_for(workers):
    """A pool of at least ``workers`` threads, and the cores its threads are pinned to (None: not pinned), the
    calling thread's first."""
    global _pool, _pool_workers, _pinned_cpus
    with _lock:
        if _pool_workers < workers:
            # A larger pool replaces the old one, which callers still using it keep alive until they are done.
            _pinned_cpus = _cores_to_pin(workers + 1)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="captionkit", initializer=_pin_worker,
                                       initargs=(_pinned_cpus, itertools.count(1)))
            _pool_workers = workers
        return _pool, _pinned_cpus


def _cores_to_pin(threads):
    """One core per thread when ``threads`` equals the cores this process may use and pinning is allowed, else
    None. With fewer threads than cores (other processes on the machine) the scheduler places them."""
    if not (_pinning_allowed() and hasattr(os, "sched_setaffinity")):
        return None
    cores = sorted(os.sched_getaffinity(0))
    return tuple(cores) if len(cores) == threads else None


def _pinning_allowed():
    value = os.environ.get("CAPTIONKIT_PIN_THREADS", "1")
    if value not in ("0", "1"):
        raise ValueError(f"CAPTIONKIT_PIN_THREADS must be 0 (let the system place threads) or 1, got {value!r}")
    return value == "1"


def _pin_worker(cores, numbering):
    if cores is not None:
        index = next(numbering)  # itertools.count is atomic under the GIL: one core per new worker
        _set_cores({cores[index]})  # a pool of len(cores) - 1 workers numbers them 1, 2, ...


def _pinned_call(task, cores):
    """``task()`` with the calling thread on ``cores[0]``, its own core set restored after. A thread whose core set
    is no longer all of ``cores``, the set the pool was pinned for (its caller narrowed it), is left where it is."""
    own = os.sched_getaffinity(0)
    pinned = own == set(cores) and _set_cores({cores[0]})
    try:
        return task()
    finally:
        if pinned:
            _set_cores(own)


def _set_cores(cores):
    """Pin this thread to ``cores``; False when the system refuses (the core set changed under us): run unpinned."""
    try:
        os.sched_setaffinity(0, cores)
    except OSError:
        return False
    return True


def _as_worker(task):
    _worker.busy = True
    try:
        return task()
    finally:
        _worker.busy = False


def rescan_blas_libraries():
    """Find the process's BLAS libraries again at the next :func:`run` (a cell may have loaded one since)."""
    global _blas_libraries
    with _blas_lock:
        _blas_libraries = None


def start():
    """Start the pool's threads (pinned, where they are) and find the BLAS libraries now, so that the first batch
    does not wait for them: a model on the compiled backend calls this when it is built."""
    rescan_blas_libraries()
    run([lambda: None] * get_num_threads())


@contextmanager
def _other_blas_on_one_thread():
    """Every BLAS library of the process on one thread while any caller is inside; their counts restored after the
    last one leaves. The kernels' own BLAS is on one thread already."""
    global _blas_libraries, _blas_callers, _blas_restore
    with _blas_lock:
        if _blas_callers == 0:
            if _blas_libraries is None:
                from threadpoolctl import ThreadpoolController

                _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
            _blas_restore = [(library, library.get_num_threads()) for library in _blas_libraries]
            for library, threads in _blas_restore:
                if threads != 1:
                    library.set_num_threads(1)
        _blas_callers += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_callers -= 1
            if _blas_callers == 0:
                for library, threads in _blas_restore:
                    if threads != 1:
                        library.set_num_threads(threads)
