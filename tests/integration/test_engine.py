"""The gated recurrence engine against each cell's own numpy reference layers, on both kinds of pointwise part and
both product paths; the compiled pointwise ABI (capsules refused by name at registration); engine calls from
several threads; and the rule that a compiled model step makes no call into numpy's BLAS.

Oracles: ``captionkit.layers.rnn_*`` (the assignment's RNN), ``captionkit_lstm.layers`` and
``captionkit_gru.layers`` (each plugin's reference, written apart from the pointwise parts the engine runs), and the
model on the numpy backend for decoding. float64 results agree to 1e-10, float32 ones to 1e-4 (relative, in norm).
"""
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from captionkit_gru import layers as gru_layers
from captionkit_lstm import layers as lstm_layers

from captionkit import CaptioningRNN, kernels, layers, parallel
from captionkit.cells import CellLoadError, CellRegistry, get_cell
from captionkit.decoding import decode
from captionkit.pointwise import Pointwise
from conftest import make_distribution, relative_error

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")

TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_numpy": 3}


def _step_rnn(x, state, Wx, Wh, b):
    return (layers.rnn_step_forward(x, state[0], Wx, Wh, b)[0],)


def _step_lstm(x, state, Wx, Wh, b):
    return lstm_layers.lstm_step_forward(x, *state, Wx, Wh, b)[:2]


def _step_gru(x, state, Wx, Wh, b):
    return (gru_layers.gru_step_forward(x, state[0], Wx, Wh, b),)


# cell -> (sequence forward, its backward, one step on a state tuple) of the cell's own reference
REFERENCES = {
    "rnn": (layers.rnn_forward, layers.rnn_backward, _step_rnn),
    "lstm": (lstm_layers.lstm_forward, lstm_layers.lstm_backward, _step_lstm),
    "gru": (gru_layers.gru_forward, gru_layers.gru_backward, _step_gru),
    "gru_numpy": (gru_layers.gru_forward, gru_layers.gru_backward, _step_gru),
}
# Every cell on each kind of pointwise part it has: its compiled one, and its numpy one run by the compiled engine.
ENGINE_PATHS = [("rnn", "compiled"), ("rnn", "numpy"), ("lstm", "compiled"), ("lstm", "numpy"),
                ("gru", "compiled"), ("gru", "numpy"), ("gru_numpy", "numpy")]


def engine_cell(cell_type, kind):
    """The cell on the compiled backend, its pointwise part compiled or numpy (the engine calling back)."""
    cell = get_cell(cell_type)(backend="cython")
    if kind == "numpy":
        cell.pointwise = dataclasses.replace(cell.pointwise, capsules=None)
    assert (cell.pointwise.capsules is not None) == (kind == "compiled")
    return cell


def cell_inputs(rng, cell_type, N, T, W, H, dtype):
    """x (N, T, W), h0 (N, H) and {Wx, Wh, b} of a stable recurrence (weights of scale 1/sqrt(fan-in)), so the
    comparison measures the arithmetic and not chaos; and the upstream gradient dh."""
    G = GATES[cell_type]
    params = {"Wx": rng.standard_normal((W, G * H)) / np.sqrt(W), "Wh": rng.standard_normal((H, G * H)) / np.sqrt(H),
              "b": 0.5 * rng.standard_normal(G * H)}
    x, h0, dh = rng.standard_normal((N, T, W)), rng.standard_normal((N, H)), rng.standard_normal((N, T, H))
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return cast(x), cast(h0), {k: cast(v) for k, v in params.items()}, cast(dh)


# ------------------------------------------------------------------------------------------- sequence and step


@pytest.mark.parametrize("cell_type, kind", ENGINE_PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "N, T, W, H",
    # Row tiles of 1, 13 and 13 + 12 rows, two groups of tiles (57 rows), cut-short panels (H = 33, 70), and
    # H = 600, where Wh is deeper and wider than the packed panels' blocks.
    [(1, 2, 3, 1), (13, 3, 5, 33), (25, 2, 4, 70), (57, 2, 4, 40), (3, 2, 3, 600)],
)
def test_engine_equals_the_cells_reference(step_products, cell_type, kind, dtype, N, T, W, H):
    forward, backward, _ = REFERENCES[cell_type]
    rng = np.random.default_rng(N * 1000 + H)
    x, h0, params, dh = cell_inputs(rng, cell_type, N, T, W, H, dtype)
    cell = engine_cell(cell_type, kind)
    h, cache = cell.forward(x, h0, params)
    wide = lambda a: a.astype(np.float64)  # noqa: E731
    h_ref, cache_ref = forward(wide(x), wide(h0), *(wide(params[k]) for k in ("Wx", "Wh", "b")))
    assert h.dtype == dtype and relative_error(h, h_ref) < TOLERANCE[np.dtype(dtype)]
    dx, dh0, grads = cell.backward(dh, cache)
    expected = backward(wide(dh), cache_ref)
    for name, got, want in zip(("dx", "dh0", "dWx", "dWh", "db"), (dx, dh0, grads["Wx"], grads["Wh"], grads["b"]),
                               expected):
        assert got.dtype == dtype and relative_error(got, want) < TOLERANCE[np.dtype(dtype)], name


@pytest.mark.parametrize("cell_type, kind", ENGINE_PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_engine_step_equals_the_cells_reference(cell_type, kind, dtype):
    _, _, step = REFERENCES[cell_type]
    rng = np.random.default_rng(3)
    x, h0, params, _ = cell_inputs(rng, cell_type, 6, 1, 5, 9, dtype)
    cell = engine_cell(cell_type, kind)
    state = cell.initial_state(h0)
    state = tuple(s + 0.3 * rng.standard_normal(s.shape).astype(dtype) for s in state)  # c != 0 for the LSTM
    got = cell.step(np.ascontiguousarray(x[:, 0]), state, params)
    want = step(x[:, 0].astype(np.float64), tuple(s.astype(np.float64) for s in state),
                *(params[k].astype(np.float64) for k in ("Wx", "Wh", "b")))
    assert len(got) == len(want) == cell.states
    for g, w in zip(got, want):
        assert g.dtype == dtype and relative_error(g, w) < TOLERANCE[np.dtype(dtype)]


def test_the_engine_runs_each_cell_on_the_pointwise_part_it_has():
    for cell_type, compiled in (("rnn", True), ("lstm", True), ("gru", True), ("gru_numpy", False)):
        assert (get_cell(cell_type)(backend="cython").pointwise.capsules is not None) is compiled, cell_type
        assert get_cell(cell_type)(backend="numpy").pointwise.capsules is None


# ------------------------------------------------------------------------------------------- decoding


def decoding_model(cell_type, backend, kind=None):
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(14)}}
    model = CaptioningRNN(vocab, input_dim=7, wordvec_dim=6, hidden_dim=19, cell_type=cell_type, dtype=np.float64,
                          backend=backend, seed=4)
    # Large weights make captions vary and some end early.
    model.params = {name: value * 3 for name, value in model.params.items()}
    if kind is not None:  # the engine with this kind of pointwise part
        model.cell = engine_cell(cell_type, kind)
    return model


@pytest.mark.parametrize("cell_type, kind", ENGINE_PATHS)
@pytest.mark.parametrize("thread_count", [1, 3])
def test_greedy_and_beam_decoding_equal_the_numpy_model(step_products, threads, cell_type, kind, thread_count):
    threads(thread_count)
    compiled, reference = decoding_model(cell_type, "cython", kind), decoding_model(cell_type, "numpy")
    features = np.random.default_rng(9).standard_normal((17, 7))
    greedy = reference.sample(features, max_length=9)
    np.testing.assert_array_equal(compiled.sample(features, max_length=9), greedy)
    ended = (greedy == 2).any(axis=1)
    assert ended.any() and not ended.all()  # both kinds of caption are exercised
    got, want = decode(compiled, features, 9, beam_size=3), decode(reference, features, 9, beam_size=3)
    np.testing.assert_array_equal(got.captions, want.captions)
    assert relative_error(got.log_probs, want.log_probs) < 1e-10


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru", "gru_numpy", "mgu"])
def test_caption_likelihoods_equal_the_numpy_model(cell_type):
    # mgu: a cell of the plain interface, whose numpy code the compiled model runs in shards.
    compiled, reference = decoding_model(cell_type, "cython"), decoding_model(cell_type, "numpy")
    rng = np.random.default_rng(5)
    captions = rng.integers(0, 17, size=(11, 8))
    captions[:, 0], captions[3, 4:] = 1, 0
    features = rng.standard_normal((11, 7))
    nll = compiled.caption_nll(features, captions)
    assert nll.shape == (11,) and relative_error(nll, reference.caption_nll(features, captions)) < 1e-10


# ------------------------------------------------------------------------------------------- threads


@pytest.mark.parametrize("cell_type, kind", ENGINE_PATHS)
def test_engine_calls_from_four_threads_at_once_give_the_results_of_one(cell_type, kind):
    """Each call packs its own matrices and keeps its own buffers; numpy callbacks take the GIL in turn."""
    rng = np.random.default_rng(6)
    jobs = [cell_inputs(rng, cell_type, 13, 6, 8, 40, np.float32) for _ in range(4)]
    cell = engine_cell(cell_type, kind)

    def run(job):
        x, h0, params, dh = job
        h, cache = cell.forward(x, h0, params)
        dx, dh0, grads = cell.backward(dh, cache)
        state = cell.step(np.ascontiguousarray(x[:, 0]), cell.initial_state(h0), params)
        return [h, dx, dh0, *grads.values(), *state]

    alone = [run(job) for job in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, jobs * 4))
    for i, results in enumerate(together):
        for got, want in zip(results, alone[i % len(jobs)]):
            np.testing.assert_array_equal(got, want)


def test_numpys_blas_runs_on_one_thread_inside_a_compiled_step_and_is_restored_after():
    from threadpoolctl import threadpool_info

    def numpy_blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if "numpy" in lib["filepath"]]

    before = numpy_blas_threads()
    if not before:
        pytest.skip("threadpoolctl finds no BLAS of numpy's to check")
    parallel.rescan_blas_libraries()
    inside = parallel.run([numpy_blas_threads, numpy_blas_threads])
    assert inside == [[1] * len(before)] * 2
    assert numpy_blas_threads() == before


# ------------------------------------------------------------------------------------------- the compiled ABI

BAD_CAPSULES_MODULE = """
import ctypes

from captionkit._ext.pointwise import capsule_names
from captionkit.cells.rnn import RNNCell

_new = ctypes.pythonapi.PyCapsule_New
_new.restype, _new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
NAMES = {{key: name.encode() for key, name in capsule_names().items()}}  # kept alive: the capsules point at them
{assignments}
FUNCTION = ctypes.cast(ctypes.pythonapi.Py_IncRef, ctypes.c_void_p)  # any C function: it is never called


def capsules(names):
    return {{key: _new(FUNCTION, name, None) for key, name in names.items()}}


class Cell(RNNCell):
    name = "{name}"
    compiled_pointwise = "{module}:CAPSULES"

CAPSULES = {capsules}
"""

BAD_PARTS = {
    # name: (extra module lines, the CAPSULES expression, what the refusal says)
    "another_signature": ('NAMES["forward float32"] = NAMES["forward float64"]', "capsules(NAMES)",
                          r"forward float32 capsule is named 'captionkit.pointwise.v1 forward float64: void "
                          r"\(Py_ssize_t, double \*.*another signature, or was built against another version"),
    "another_version": ('OLD = NAMES["backward float32"].replace(b"v1", b"v0")\nNAMES["backward float32"] = OLD',
                        "capsules(NAMES)", r"backward float32 capsule is named 'captionkit.pointwise.v0"),
    "missing_one": ('del NAMES["backward float64"]', "capsules(NAMES)", r"has no capsule for backward float64"),
    "not_capsules": ("", '{key: "a string" for key in NAMES}', r"'forward float32' is str, not a capsule"),
    "not_a_dict": ("", "[1, 2]", r"compiled pointwise part is list, not the dict of pointwise_capsules"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARTS))
def test_a_compiled_part_of_another_signature_is_refused_at_registration_naming_its_distribution(plugin_root,
                                                                                                case):
    assignments, capsules, message = BAD_PARTS[case]
    module = f"ck_fake_capsules_{case}"
    source = BAD_CAPSULES_MODULE.format(assignments=assignments, name=case, module=module, capsules=capsules)
    make_distribution(plugin_root, f"fake-{case}", "0.9", {case: f"{module}:Cell"}, {module: source})
    registry = CellRegistry()
    with pytest.raises(CellLoadError, match=rf"cell '{case}' from distribution fake-{case} 0\.9 .*is broken: "
                                            rf".*{message}"):
        registry.get_cell(case)
    assert registry.get_cell("rnn").name == "rnn"  # the others keep working


def test_a_compiled_part_that_fails_to_import_is_refused_naming_its_distribution(plugin_root):
    source = """
        from captionkit.cells.rnn import RNNCell


        class Cell(RNNCell):
            name = "unbuilt"
            compiled_pointwise = "ck_fake_unbuilt_pointwise:CAPSULES"
    """
    make_distribution(plugin_root, "fake-unbuilt", "1.1", {"unbuilt": "ck_fake_unbuilt:Cell"},
                      {"ck_fake_unbuilt": source})
    with pytest.raises(CellLoadError, match=r"fake-unbuilt 1\.1.*compiled pointwise part "
                                            r"ck_fake_unbuilt_pointwise:CAPSULES does not import: ModuleNotFound"):
        CellRegistry().get_cell("unbuilt")


@pytest.mark.parametrize("attribute, value, message", [
    ("gates", 0, r"gates must be an integer >= 1, got 0"),
    ("states", 9, r"states must be an integer in \[1, 8\], got 9"),
    ("summed", "yes", r"summed must be True or False, got 'yes'"),
    ("kept", 2, r"kept must be an integer >= gates \(4\), got 2"),
])
def test_a_form_the_engine_cannot_run_is_refused_naming_its_distribution(plugin_root, attribute, value, message):
    source = f"""
        from captionkit_lstm.cell import LSTMCell


        class Cell(LSTMCell):
            name = "odd"
            {attribute} = {value!r}
    """
    make_distribution(plugin_root, "fake-odd", "2.0", {"odd": "ck_fake_odd:Cell"}, {"ck_fake_odd": source})
    with pytest.raises(CellLoadError, match=rf"'odd' from distribution fake-odd 2\.0.*is broken: {message}"):
        CellRegistry().get_cell("odd")


def test_the_kernels_refuse_a_bad_compiled_part_without_calling_it():
    cell = get_cell("rnn")(backend="cython")
    capsules = dict(cell.pointwise.capsules, **{"forward float32": cell.pointwise.capsules["forward float64"]})
    bad = dataclasses.replace(cell.pointwise, capsules=capsules)
    x, h0, params, _ = cell_inputs(np.random.default_rng(0), "rnn", 2, 3, 4, 5, np.float32)
    with pytest.raises(ValueError, match=r"cell 'rnn': its forward float32 capsule is named .*float64"):
        kernels.gated_forward(x, h0, params["Wx"], params["Wh"], params["b"], bad)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_a_numpy_pointwise_part_that_returns_the_wrong_thing_is_named(backend):
    def forward(a, u, prev):
        return (a[:, :-1],), None  # one unit short

    def backward(dnext, saved):
        return dnext[0], None, (None,)

    ops = kernels if backend == "cython" else layers
    cell = Pointwise("short", gates=1, forward=forward, backward=backward)
    x, h0, params, _ = cell_inputs(np.random.default_rng(0), "rnn", 2, 3, 4, 5, np.float64)
    with pytest.raises(ValueError, match=r"cell 'short': pointwise_forward's next state\[0\] must have shape "
                                         r"\(2, 5\), got \(2, 4\)"):
        ops.gated_forward(x, h0, params["Wx"], params["Wh"], params["b"], cell)
    with pytest.raises(ValueError, match=r"cell 'short': pointwise_forward must return \(next_state, saved\)"):
        ops.gated_step(x[:, 0].copy(), (h0,), params["Wx"], params["Wh"], params["b"],
                       dataclasses.replace(cell, forward=lambda a, u, prev: (a,)))


# ------------------------------------------------------------------------------------------- one BLAS per step

COUNT_NUMPY_BLAS = """
import ctypes, sys
import numpy as np
from captionkit import CaptioningRNN
from captionkit.decoding import decode

calls = ctypes.CDLL(sys.argv[1]).numpy_blas_calls
calls.restype = ctypes.c_long
vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(30)}}
rng = np.random.default_rng(0)
features, captions = rng.standard_normal((24, 16)), rng.integers(0, 33, size=(24, 9))
captions[:, 0] = 1
grids = rng.standard_normal((24, 4, 16))
for cell_type in sys.argv[2:]:
    for name, inputs, attention in ((cell_type, features, {}),
                                    (cell_type + "+soft", grids, {"regions": 4, "attention": "soft"})):
        model = CaptioningRNN(vocab, input_dim=16, wordvec_dim=12, hidden_dim=20, cell_type=cell_type,
                              backend="cython", **attention)
        before = calls()
        model.loss(inputs, captions)
        model.sample(inputs, max_length=6)
        decode(model, inputs, 6, beam_size=3)
        model.caption_nll(inputs, captions)
        print(name, calls() - before)
before = calls()
np.ones((3, 3)) @ np.ones((3, 3))  # the control: numpy's own matmul is counted
print("control", calls() - before)
"""

# For each BLAS function numpy calls: a function of the same name that counts the call and jumps to numpy's own
# (x86-64: the jump leaves every argument register as it was), and a constructor that finds numpy's functions.
COUNTER_SOURCE = """
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
__attribute__((used)) static volatile long counted;  /* used: only the assembly writes it */
long numpy_blas_calls(void) { return counted; }
%s
__attribute__((constructor)) static void find_numpys_blas(void)
{
    void *library = dlopen(getenv("NUMPY_BLAS_LIBRARY"), RTLD_NOW | RTLD_LOCAL);
    if (!library) abort();
%s
}
"""
WRAPPER = ('__attribute__((used)) static void *real_{0};\n__attribute__((naked)) void {0}(void) '
           '{{ __asm__("lock incq counted(%rip)\\n\\tjmp *real_{0}(%rip)"); }}\n')


@pytest.mark.slow
def test_a_compiled_model_makes_no_call_into_numpys_blas(tmp_path):
    """Every product of a compiled step goes through captionkit's BLAS (one thread pool per process). Checked by
    putting a library in front of numpy's BLAS (LD_PRELOAD) that counts its calls: training, greedy and beam
    decoding and caption likelihoods of every gated cell, pooled and with soft attention, leave the count where it
    was, and one numpy matmul afterwards raises it."""
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64" and shutil.which("gcc")
            and shutil.which("nm")):
        pytest.skip("needs x86-64 Linux, gcc and nm to put a counting library in front of numpy's BLAS")
    numpy_dir = Path(np.__file__).parent
    libraries = sorted((numpy_dir.parent / "numpy.libs").glob("*openblas*.so*"))
    if not libraries:
        pytest.skip("this numpy carries no OpenBLAS of its own to count calls into")
    multiarray = next((numpy_dir / "_core").glob("_multiarray_umath*.so"))
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(multiarray)], capture_output=True,
                               text=True).stdout
    symbols = sorted({line.split()[-1] for line in undefined.splitlines() if "blas" in line.lower()})
    wrappers = "".join(WRAPPER.format(symbol) for symbol in symbols)
    lookups = "".join(f'    real_{symbol} = dlsym(library, "{symbol}");\n' for symbol in symbols)
    (tmp_path / "count.c").write_text(COUNTER_SOURCE % (wrappers, lookups))
    library = tmp_path / "count.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(library), str(tmp_path / "count.c"), "-ldl"],
                   check=True)
    cells = ["rnn", "lstm", "gru", "gru_numpy"]
    environment = {**os.environ, "LD_PRELOAD": str(library), "NUMPY_BLAS_LIBRARY": str(libraries[0])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(COUNT_NUMPY_BLAS), str(library), *cells],
                          capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr
    counts = {cell: int(count) for cell, count in (line.split() for line in done.stdout.splitlines())}
    expected = {**{cell: 0 for cell in cells}, **{f"{cell}+soft": 0 for cell in cells}, "control": counts["control"]}
    assert counts == expected and counts["control"] > 0
