"""The compiled backend's routes to speed, checked against the numpy reference: the packed-panel products of the
time loops (against BLAS and layers), greedy decoding in one compiled loop (against the model's step loop on
numpy) and the batch cut into shards on threads (against one shard).

Shards change only the order of the gradient sums, so float64 results agree to rounding (1e-12 relative here).
"""
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from captionkit import CaptioningRNN, kernels, layers, optim, parallel
from captionkit.cells import get_cell
from conftest import relative_error

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")

VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(17)}}


# ---------------------------------------------------------------------- packed panels


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize(
    "N, T, D, H",
    # Row tiles of 1-14 rows (15 = 8 + 7, 25 = 13 + 12), groups of up to 4 tiles (57 rows: 2 groups of 28 + 29),
    # whole and cut-short panels (16 and 32 columns).
    [(1, 2, 3, 1), (2, 3, 4, 16), (14, 4, 5, 31), (15, 3, 3, 17), (25, 3, 7, 33), (30, 2, 6, 70), (12, 5, 8, 64),
     (57, 2, 4, 40)],
)
def test_time_loops_equal_reference_on_both_product_paths(step_products, dtype, tolerance, N, T, D, H):
    rng = np.random.default_rng(N * 1000 + H)
    scale = 1 / np.sqrt(H)  # a stable recurrence, so the comparison measures the products and not chaos
    x = rng.standard_normal((N, T, D))
    h0, dh = rng.standard_normal((N, H)), rng.standard_normal((N, T, H))
    Wx, Wh, b = rng.standard_normal((D, H)) * scale, rng.standard_normal((H, H)) * scale, rng.standard_normal(H)
    h, cache = kernels.rnn_forward(*(a.astype(dtype) for a in (x, h0, Wx, Wh, b)))
    h_ref, cache_ref = layers.rnn_forward(x, h0, Wx, Wh, b)
    assert h.dtype == dtype and relative_error(h, h_ref) < tolerance
    grads = kernels.rnn_backward(dh.astype(dtype), cache)
    for name, got, want in zip(("dx", "dh0", "dWx", "dWh", "db"), grads, layers.rnn_backward(dh, cache_ref)):
        assert relative_error(got, want) < tolerance, name


def test_panel_path_is_taken_where_the_cpu_allows_it():
    from captionkit._ext import _blas

    previous = _blas.use_panel(True, True)
    try:
        with open("/proc/cpuinfo") as info:
            has_avx512 = " avx512f " in info.read().replace("\n", " ")
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    finally:
        now = _blas.use_panel(*previous)
    assert now == (has_avx512 and sys.platform == "linux",) * 2


def test_other_products_go_to_the_panels_exactly_when_openblas_runs_narrower_kernels():
    """The rule captionkit binds its BLAS with: OpenBLAS's core name says whether its kernels have AVX-512."""
    from captionkit._ext import _blas

    description = kernels.blas()
    if not description.startswith("OpenBLAS"):
        pytest.skip("the kernels run on scipy's BLAS here, whose products stay on it")
    step, large = _blas.panel_use()
    avx512_blas = any(f"{core} kernels" in description for core in ("SkylakeX", "Cooperlake", "SapphireRapids"))
    assert large == (step and not avx512_blas)
    code = "from captionkit import kernels; from captionkit._ext import _blas; print(kernels.blas(), _blas.panel_use())"
    run = lambda core: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                      env={**os.environ, "OPENBLAS_CORETYPE": core}).stdout
    assert "Haswell kernels" in run("Haswell") and run("Haswell").endswith(f"({step}, {step})\n")


# ---------------------------------------------------------------------- fused greedy decoding


@pytest.mark.parametrize("with_end", [True, False])
def test_fused_greedy_decoding_equals_the_step_loop_on_numpy(step_products, threads, with_end):
    threads(1)
    vocab = VOCAB if with_end else {w: i for w, i in VOCAB.items() if w != "<END>"}
    make = lambda backend: CaptioningRNN(vocab, input_dim=9, wordvec_dim=6, hidden_dim=35, dtype=np.float64,  # noqa
                                         backend=backend, seed=8)
    compiled, reference = make("cython"), make("numpy")
    # Large weights make the captions vary and let some end early (the test checks that some do and some do not).
    for m in (compiled, reference):
        m.params = {name: value * 4 for name, value in make("numpy").params.items()}
    features = np.random.default_rng(9).standard_normal((17, 9)) * 2
    expected = reference.sample(features, max_length=12)
    got = compiled.sample(features, max_length=12)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int32
    if with_end:
        ended = (expected == 2).any(axis=1)
        assert ended.any() and not ended.all()


def test_fused_greedy_decoding_names_bad_arguments():
    rng = np.random.default_rng(10)
    N, H, V, W = 3, 5, 7, 4
    h0, W_embed, Wx, Wh, b = (rng.standard_normal(s) for s in ((N, H), (V, W), (W, H), (H, H), (H,)))
    W_vocab, b_vocab = rng.standard_normal((H, V)), rng.standard_normal(V)
    args = dict(h0=h0, W_embed=W_embed, Wx=Wx, Wh=Wh, b=b, W_vocab=W_vocab, b_vocab=b_vocab, start=1, end=2, null=0,
                max_length=4, pointwise=get_cell("rnn")(backend="cython").pointwise)
    assert kernels.gated_greedy_decode(**args).shape == (N, 4)
    for change, message in [
        (dict(start=V), r"start must be a word id in \[0, 7\)"),
        (dict(end=-1), r"end must be a word id"),
        (dict(null=1.0), r"null must be an integer word id"),
        (dict(max_length=0), r"max_length must be in"),
        (dict(W_vocab=W_vocab[:, :-1].copy()), r"W_vocab must have shape \(5, 7\)"),
        (dict(Wh=Wh.astype(np.float32)), r"Wh"),
        (dict(b_vocab=b_vocab[:-1]), r"b_vocab must have shape \(7,\)"),
    ]:
        with pytest.raises((TypeError, ValueError), match=message):
            kernels.gated_greedy_decode(**{**args, **change})


# ---------------------------------------------------------------------- shards on threads


def model(dtype=np.float64, backend="cython"):
    return CaptioningRNN(VOCAB, input_dim=9, wordvec_dim=6, hidden_dim=11, dtype=dtype, backend=backend, seed=5)


def batch(N, T=8, seed=0):
    rng = np.random.default_rng(seed)
    captions = rng.integers(0, len(VOCAB), size=(N, T))
    captions[:, 0] = 1
    captions[::3, T // 2:] = 0  # padding in some rows
    return rng.standard_normal((N, 9)), captions


@pytest.mark.parametrize("N, count", [(25, 2), (25, 3), (9, 2), (40, 4)])
def test_sharded_loss_equals_one_shard_and_the_reference(threads, N, count):
    features, captions = batch(N)
    compiled = model()
    threads(1)
    assert len(parallel.shards(N)) == 1
    loss_one, grads_one = compiled.loss(features, captions)
    threads(count)
    assert len(parallel.shards(N)) == min(count, N // 4) > 1
    loss, grads = compiled.loss(features, captions)
    reference = model(backend="numpy")
    loss_ref, grads_ref = reference.loss(features, captions)
    assert abs(loss - loss_one) <= 1e-12 * loss_one and abs(loss - loss_ref) <= 1e-12 * loss_ref
    for name in grads_ref:
        assert relative_error(grads[name], grads_one[name]) < 1e-12, name
        assert relative_error(grads[name], grads_ref[name]) < 1e-12, name


def test_sharded_float32_loss_is_within_float32_rounding(threads):
    features, captions = batch(30, seed=1)
    compiled = model(np.float32)
    threads(1)
    loss_one, grads_one = compiled.loss(features, captions)
    threads(2)
    loss, grads = compiled.loss(features, captions)
    assert abs(loss - loss_one) <= 1e-5 * loss_one
    for name in grads:
        assert grads[name].dtype == np.float32 and relative_error(grads[name], grads_one[name]) < 1e-5, name


def test_sharded_greedy_sampling_equals_one_shard(threads):
    features = np.random.default_rng(3).standard_normal((23, 9)) * 3
    compiled = model()
    threads(1)
    one = compiled.sample(features, max_length=7)
    threads(3)
    assert len(parallel.shards(23)) == 3
    np.testing.assert_array_equal(compiled.sample(features, max_length=7), one)


def test_adam_update_in_slices_equals_the_reference(threads):
    threads(2)
    rng = np.random.default_rng(4)
    w, dw = rng.standard_normal(3 * 65536 + 5), rng.standard_normal(3 * 65536 + 5)
    assert len(parallel.shards(w.size, min_rows=65536)) == 2
    m, v = np.zeros_like(w), np.zeros_like(w)
    expected, config = w.copy(), {"learning_rate": 1e-2}
    for t in range(1, 4):
        kernels.adam_update(w, dw, m, v, t, learning_rate=1e-2, map_shards=parallel.map_shards)
        expected, config = optim.adam(expected, dw, config)
    assert relative_error(w, expected) < 1e-14
    assert relative_error(m, config["m"]) < 1e-14 and relative_error(v, config["v"]) < 1e-14


def test_output_layer_shards_add_up_to_the_whole_batch():
    rng = np.random.default_rng(6)
    h, w, b = rng.standard_normal((10, 4, 5)), rng.standard_normal((5, 7)), rng.standard_normal(7)
    y, mask = rng.integers(0, 7, size=(10, 4)), rng.random((10, 4)) > 0.3
    loss, dh, dw, db = kernels.temporal_softmax_affine_loss(h, w, b, y, mask)
    first = kernels.temporal_softmax_affine_loss(h[:6], w, b, y[:6], mask[:6], batch=10)
    second = kernels.temporal_softmax_affine_loss(h[6:], w, b, y[6:], mask[6:], batch=10)
    assert abs(first[0] + second[0] - loss) < 1e-12 * loss
    assert relative_error(np.concatenate([first[1], second[1]]), dh) < 1e-14
    assert relative_error(first[2] + second[2], dw) < 1e-14 and relative_error(first[3] + second[3], db) < 1e-14
    with pytest.raises(ValueError, match="batch"):
        kernels.temporal_softmax_affine_loss(h, w, b, y, mask, batch=0)


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


@needs_affinity
def test_shards_run_on_cores_of_their_own_when_there_is_a_thread_per_core():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to share out")
    own, seen, restored = pinning_probe(len(cores))
    assert own == cores
    assert sorted(core for mask in seen for core in mask) == cores and all(len(mask) == 1 for mask in seen)
    assert restored  # the calling thread may run anywhere again once run() returns


@needs_affinity
def test_a_caller_that_narrowed_its_own_cores_is_left_on_them():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to share out")
    own, seen, restored = pinning_probe(len(cores), narrow=True)
    assert own == [cores[-1]] and seen[0] == [cores[-1]] and restored


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
@pytest.mark.parametrize("env, kept", [({}, True), ({"CAPTIONKIT_KEEP_FREED_MEMORY": "0"}, False),
                                       ({"MALLOC_TRIM_THRESHOLD_": "131072"}, False)])
def test_compiled_model_keeps_freed_memory_for_reuse_unless_told_not_to(env, kept):
    # A freed 8 MiB array stays in malloc's free bytes (mallinfo2's fordblks) only with the setting in force;
    # without it the array is a mapping of its own, returned to the system (fordblks grows by about 0, not 8 MiB).
    code = """
import ctypes, numpy as np
from captionkit import CaptioningRNN, allocation
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
CaptioningRNN({"<NULL>": 0, "a": 1}, input_dim=3, wordvec_dim=2, hidden_dim=2, backend="cython")
before = libc.mallinfo2().fordblks
a = np.ones(1 << 20)
del a
print(allocation.keep_freed_memory(), libc.mallinfo2().fordblks - before >= 4 << 20)
"""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**environment, **env})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(kept), str(kept)]


def test_parallel_works_without_the_compiled_kernels():
    # A numpy-only install: captionkit._ext cannot be imported (None in sys.modules makes the import fail). The thread
    # module is a leaf, so it still answers, on one thread, instead of raising through the kernels.
    code = ("import sys; sys.modules['captionkit._ext'] = None\n"
            "from captionkit import parallel\n"
            "print(parallel.get_num_threads(), parallel.run([lambda: 'a', lambda: 'b']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "['a',", "'b']"]
