"""The conformance checks a recurrent cell must pass, on tiny sizes so they take well under a second per backend.

Each check runs in float64 (and float32 where dtypes matter) against an independent oracle: centred finite
differences for gradients, the cell's own sequence forward for its decoding step, the numpy path for a compiled
path (also inside a model that runs its batch in shards on several threads, for loss, gradients, greedy and beam
decoding). A check that raises is a failed check, so a broken plugin yields a report, never a crash.
"""
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from captionkit.backend import compiled_available
from captionkit.cells import (
    Cell,
    CellConflictError,
    CellLoadError,
    CellSizes,
    GatedCell,
    ParamSpec,
    UnknownCellError,
    get_cell,
)
from captionkit.cells.registry import describe_cell
from captionkit.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array

__all__ = ["CheckResult", "ConformanceError", "ConformanceReport", "check_cell", "gradient_error", "run_checks"]

# Sizes of the checks: N minibatch, T steps, W word-vector size, H hidden size (W != H so that transposed shapes
# cannot pass), D image-feature size, and the vocabulary of the model check (with <NULL> so masking is exercised).
N, T, W, H, D = 2, 3, 4, 5, 6
# A gated cell is also checked reading a grid of L regions through soft attention of size A.
L, A = 3, 4
VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, "cat": 3, "dog": 4}

# Limits. With gradient_error below, correct cells measure about 1e-8 (sequence) and 5e-7 (model) on these sizes,
# while a wrong gradient is off by 1e-2 or more. float32 carries about 7 digits, so float32 results are compared
# with float64 at 1e-4 of the values' scale.
SEQUENCE_GRAD_LIMIT = 1e-6
MODEL_GRAD_LIMIT = 1e-5
FLOAT64_MATCH_LIMIT = 1e-9
FLOAT32_MATCH_LIMIT = 1e-4


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check on one backend; ``detail`` gives the measured error and its limit, or what went wrong."""

    check: str
    backend: str
    passed: bool
    detail: str


@dataclass
class ConformanceReport:
    """All results for one cell; ``origin`` says which distribution provides it."""

    cell: str
    origin: str
    results: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # what was not checked, and why

    @property
    def ok(self):
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failures(self):
        return [r for r in self.results if not r.passed]

    def format(self):
        """A readable multi-line summary, one line per check."""
        lines = [f"cell {self.cell!r} from {self.origin}"]
        width = max((len(r.check) for r in self.results), default=0)
        label_width = max((len(r.backend) for r in self.results), default=0) + 2
        for r in self.results:
            status = "ok  " if r.passed else "FAIL"
            lines.append(f"  {status} {f'[{r.backend}]':<{label_width}} {r.check:<{width}}  {r.detail}")
        lines.extend(f"  note: {note}" for note in self.notes)
        verdict = "passes" if self.ok else f"fails {len(self.failures)} of {len(self.results)} checks"
        lines.append(f"cell {self.cell!r} {verdict}")
        return "\n".join(lines)


class ConformanceError(AssertionError):
    """A cell failed conformance checks; ``report`` holds every result."""

    def __init__(self, report):
        super().__init__(report.format())
        self.report = report


class _CheckFailed(Exception):
    """Raised by a check with a message saying what is wrong."""


# ---------------------------------------------------------------------------------------------- inputs
def _sample(cell, dtype, seed):
    """x (N, T, W), h0 (N, H), params and an upstream gradient dh (N, T, H), drawn from ``seed``, in ``dtype``.

    Parameters start from the cell's own initialisation plus noise, so biases are not zero.
    """
    rng = np.random.RandomState(seed)
    params = cell.init_params(W, H, rng)
    params = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}
    x = rng.standard_normal((N, T, W)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((N, H))).astype(dtype)
    dh = rng.standard_normal((N, T, H)).astype(dtype)
    return x, h0, params, dh


def gradient_error(analytic, numerical):
    """Largest elementwise relative error |a - n| / (|a| + |n|), where elements below 1e-3 of the array's largest are
    measured against that 1e-3 floor instead: finite differences cannot resolve a near-zero element to a relative
    accuracy, while a wrong gradient is wrong at the scale of the array's large elements too."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numerical, dtype=np.float64)
    size = np.abs(a) + np.abs(n)
    floor = max(1e-3 * float(np.max(size, initial=0.0)), 1e-12)
    return float(np.max(np.abs(a - n) / np.maximum(size, floor), initial=0.0))


def _scale_error(actual, expected):
    """Largest difference relative to the size of the expected values (at least 1)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def _expect_shape(what, array, shape, dtype):
    if not isinstance(array, np.ndarray):
        raise _CheckFailed(f"{what} is {type(array).__name__}, expected an array of shape {shape}")
    if array.shape != tuple(shape):
        raise _CheckFailed(f"{what} has shape {array.shape}, expected {tuple(shape)} (W={W}, H={H}, N={N}, T={T})")
    if array.dtype != dtype:
        raise _CheckFailed(f"{what} has dtype {array.dtype}, expected {np.dtype(dtype)} (the inputs' dtype)")
    if not np.all(np.isfinite(array)):
        raise _CheckFailed(f"{what} has non-finite values")


def _run(cell, x, h0, params, dh):
    """Forward and backward, checking every shape and dtype against the declaration; returns h, dx, dh0, grads."""
    dtype = x.dtype
    declared = cell.parameters(W, H)
    h, cache = cell.forward(x, h0, params)
    _expect_shape("forward output h", h, (N, T, H), dtype)
    out = cell.backward(dh, cache)
    if not (isinstance(out, tuple) and len(out) == 3):
        raise _CheckFailed(f"backward must return (dx, dh0, grads), got {type(out).__name__}")
    dx, dh0, grads = out
    _expect_shape("backward dx", dx, (N, T, W), dtype)
    _expect_shape("backward dh0", dh0, (N, H), dtype)
    if not isinstance(grads, dict) or set(grads) != set(declared):
        got = sorted(grads) if isinstance(grads, dict) else type(grads).__name__
        raise _CheckFailed(f"backward grads has keys {got}, expected the declared parameters {sorted(declared)}")
    for name, spec in declared.items():
        _expect_shape(f"backward grads[{name!r}]", grads[name], spec.shape, dtype)
    return h, dx, dh0, grads


# ---------------------------------------------------------------------------------------------- checks
def _check_declaration(cell, seed):
    declared = cell.parameters(W, H)
    if not isinstance(declared, dict) or not declared:
        raise _CheckFailed(f"parameters(W, H) must return a non-empty dict of ParamSpec, got {declared!r}")
    for name, spec in declared.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise _CheckFailed(f"parameter name {name!r} is not an identifier")
        if not isinstance(spec, ParamSpec):
            raise _CheckFailed(f"parameter {name!r} is declared as {spec!r}, not a ParamSpec")
        shape = tuple(spec.shape)
        if not shape or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
            raise _CheckFailed(f"parameter {name!r} has shape {spec.shape!r}; expected positive integer sizes")
    initial = cell.init_params(W, H, np.random.RandomState(seed))
    for name, spec in declared.items():
        if name not in initial:
            raise _CheckFailed(f"init_params gives no value for the declared parameter {name!r}")
        _expect_shape(f"initial value of {name!r}", initial[name], spec.shape, np.float64)
    return ", ".join(f"{name} {tuple(spec.shape)}" for name, spec in declared.items()) + f" for W={W}, H={H}"


def _check_model_sizes(cell, seed):
    """What the model asks with its sizes: the parameters (those of parameters(W, H) unless the cell overrides
    parameters_for), their initial values, and the step's memory blocks."""
    sizes = CellSizes(W, H, D)
    declared = cell.parameters_for(sizes)
    if type(cell).parameters_for is Cell.parameters_for and declared != cell.parameters(W, H):
        raise _CheckFailed("parameters_for(sizes) differs from parameters(W, H) without being overridden")
    if not isinstance(declared, dict) or not all(isinstance(spec, ParamSpec) for spec in declared.values()):
        raise _CheckFailed(f"parameters_for(sizes) must return a dict of ParamSpec, got {declared!r}")
    initial = cell.init_params_for(sizes, np.random.RandomState(seed))
    for name, spec in declared.items():
        if name not in initial:
            raise _CheckFailed(f"init_params_for gives no value for the declared parameter {name!r}")
        _expect_shape(f"initial value of {name!r}", initial[name], spec.shape, np.float64)
    blocks = cell.step_blocks(sizes)
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 1:
        raise _CheckFailed(f"step_blocks(sizes) must be an integer >= 1, got {blocks!r}")
    return f"{len(declared)} parameters for {sizes}; {blocks} H-wide blocks per step"


def _check_without_context(cell, seed):
    """The model's calls with context None (run_forward, run_backward, run_step) give the cell's own results, and a
    cell that reads no context refuses one, naming itself."""
    x, h0, params, dh = _sample(cell, np.float64, seed)
    h, cache = cell.run_forward(x, h0, params, None)
    _expect_shape("run_forward's h", h, (N, T, H), np.float64)
    dx, dh0, dcontext, grads = cell.run_backward(dh, cache)
    if not cell.reads_context:
        if dcontext is not None:
            raise _CheckFailed("run_backward gives a context gradient for a cell that reads no context")
        own_h, own_dx, own_dh0, own_grads = _run(cell, x, h0, params, dh)
        if not (np.array_equal(h, own_h) and np.array_equal(dx, own_dx) and np.array_equal(dh0, own_dh0)
                and all(np.array_equal(grads[k], own_grads[k]) for k in params)):
            raise _CheckFailed("run_forward and run_backward differ from the cell's forward and backward")
    x0 = np.ascontiguousarray(x[:, 0])
    state = cell.run_step(x0, cell.initial_state(h0), params, None, np.arange(N))
    error = _scale_error(state[0], h[:, 0])
    if error > FLOAT64_MATCH_LIMIT:
        raise _CheckFailed(f"run_step's h differs from run_forward's first step by {error:.2e}")
    if cell.reads_context:
        return "run_forward, run_backward and run_step run with context None"
    try:
        cell.run_step(x0, cell.initial_state(h0), params, np.zeros((N, 1)), np.arange(N))
    except ValueError as exc:
        if repr(cell.name) not in str(exc):
            raise _CheckFailed(f"refusing a context, the error does not name the cell: {exc}") from None
    else:
        raise _CheckFailed("run_step accepted a context although the cell does not read one")
    return "run_forward, run_backward and run_step are the cell's own calls; a context is refused, naming the cell"


def _check_shapes(dtype):
    def check(cell, seed):
        x, h0, params, dh = _sample(cell, dtype, seed)
        before = [a.copy() for a in (x, h0, dh, *params.values())]
        _run(cell, x, h0, params, dh)
        after = (x, h0, dh, *params.values())
        if not all(np.array_equal(b, a) for b, a in zip(before, after)):
            raise _CheckFailed("forward or backward modified its inputs")
        return "forward and backward shapes and dtypes match the declaration; inputs untouched"

    return check


def _check_step(dtype):
    limit = FLOAT64_MATCH_LIMIT if dtype == np.float64 else FLOAT32_MATCH_LIMIT

    def check(cell, seed):
        x, h0, params, _ = _sample(cell, dtype, seed)
        h, _ = cell.forward(x, h0, params)
        state = cell.initial_state(h0)
        worst = 0.0
        for t in range(T):
            state = cell.step(np.ascontiguousarray(x[:, t]), state, params)  # contiguous, as the model passes
            if not isinstance(state, tuple) or not state:
                raise _CheckFailed(f"step must return a non-empty tuple (h, ...), got {type(state).__name__}")
            if any(not isinstance(s, np.ndarray) or s.shape[:1] != (N,) for s in state):
                raise _CheckFailed("every element of the state must be an array with N rows")
            _expect_shape(f"step's h at t={t}", state[0], (N, H), dtype)
            worst = max(worst, _scale_error(state[0], h[:, t]))
        if worst > limit:
            raise _CheckFailed(f"step's h differs from forward's h by {worst:.2e} (limit {limit:.0e})")
        return f"max difference {worst:.2e} over {T} steps (limit {limit:.0e})"

    return check


def _check_float32(cell, seed):
    x, h0, params, dh = _sample(cell, np.float32, seed)
    wide = [a.astype(np.float64) for a in (x, h0, dh)]
    wide_params = {k: v.astype(np.float64) for k, v in params.items()}
    narrow_out = _run(cell, x, h0, params, dh)
    wide_out = _run(cell, wide[0], wide[1], wide_params, wide[2])
    errors = {"h": _scale_error(narrow_out[0], wide_out[0]), "dx": _scale_error(narrow_out[1], wide_out[1]),
              "dh0": _scale_error(narrow_out[2], wide_out[2])}
    errors.update({f"d{k}": _scale_error(narrow_out[3][k], wide_out[3][k]) for k in wide_out[3]})
    worst = max(errors, key=errors.get)
    if errors[worst] > FLOAT32_MATCH_LIMIT:
        raise _CheckFailed(
            f"float32 {worst} differs from float64 by {errors[worst]:.2e} (limit {FLOAT32_MATCH_LIMIT:.0e})"
        )
    return f"max difference {errors[worst]:.2e} ({worst}; limit {FLOAT32_MATCH_LIMIT:.0e})"


def _check_sequence_gradients(cell, seed):
    x, h0, params, dh = _sample(cell, np.float64, seed)
    _, dx, dh0, grads = _run(cell, x, h0, params, dh)

    def out(_):
        return cell.forward(x, h0, params)[0]

    errors = {"x": gradient_error(dx, eval_numerical_gradient_array(out, x, dh)),
              "h0": gradient_error(dh0, eval_numerical_gradient_array(out, h0, dh))}
    for name, value in params.items():
        errors[name] = gradient_error(grads[name], eval_numerical_gradient_array(out, value, dh))
    return _summarise_gradients(errors, SEQUENCE_GRAD_LIMIT)


def _check_model_gradients(cell_type):
    def check(cell, seed):
        return _model_gradients(cell_type, cell, seed)

    return check


def _model_gradients(cell_type, cell, seed):
    from captionkit.model import CaptioningRNN  # the model imports the registry; keep this module light to import

    # The model is built for the numpy backend, whose choice depends on captionkit's own kernels; the cell under
    # test (with its own backend) then takes the place of the one the model made.
    model = CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64,
                          backend="numpy", seed=seed)
    model.cell = cell
    rng = np.random.RandomState(seed + 1)
    # The default word vectors (scale 1e-2) make dWx tiny, and tiny elements turn finite-difference noise into
    # large relative errors; parameters of scale 0.5 keep every gradient element well away from zero.
    model.params = {k: 0.5 * rng.standard_normal(v.shape) for k, v in model.params.items()}
    features = rng.standard_normal((N, D))
    captions = rng.randint(len(VOCAB), size=(N, T + 1))
    captions[:, 0] = VOCAB["<START>"]
    loss, grads = model.loss(features, captions)
    if not np.isfinite(loss):
        raise _CheckFailed(f"model loss is {loss}")
    errors = {}
    for name in sorted(model.params):
        numerical = eval_numerical_gradient(lambda _: model.loss(features, captions)[0], model.params[name],
                                            verbose=False, h=1e-5)
        errors[name] = gradient_error(numerical, grads[name])
    return _summarise_gradients(errors, MODEL_GRAD_LIMIT)


def _check_attention_gradients(cell_type):
    def check(cell, seed):
        return _attention_gradients(cell_type, cell, seed)

    return check


def _attention_gradients(cell_type, cell, seed):
    """The model's loss (with the doubly stochastic penalty) over a grid, with ``cell`` reading it through soft
    attention: its gradients against finite differences, as :func:`_model_gradients` checks the pooled model."""
    from captionkit.model import CaptioningRNN

    model = CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64,
                          backend="numpy", seed=seed, regions=L, attention="soft", attention_dim=A)
    model.cell.inner = cell
    rng = np.random.RandomState(seed + 2)
    model.params = {k: 0.5 * rng.standard_normal(v.shape) for k, v in model.params.items()}
    features = rng.standard_normal((N, L, D))
    captions = rng.randint(len(VOCAB), size=(N, T + 1))
    captions[:, 0] = VOCAB["<START>"]
    loss, grads = model.loss(features, captions)
    if not np.isfinite(loss):
        raise _CheckFailed(f"attention model loss is {loss}")
    errors = {name: gradient_error(eval_numerical_gradient(lambda _: model.loss(features, captions)[0],
                                                           model.params[name], verbose=False, h=1e-5), grads[name])
              for name in sorted(model.params)}
    return _summarise_gradients(errors, MODEL_GRAD_LIMIT)


def _check_attention_step(cell, seed):
    """Decoding's attention step, fed the training inputs word by word, gives the forward's h and weights."""
    from captionkit.attention import AttendedCell, SoftAttention

    attended = AttendedCell(cell, SoftAttention(), A)
    rng = np.random.RandomState(seed + 3)
    params = {k: v + 0.1 * rng.standard_normal(v.shape)
              for k, v in attended.init_params_for(CellSizes(W, H, D, D), rng).items()}
    x, h0, V = rng.standard_normal((N, T, W)), rng.standard_normal((N, H)), rng.standard_normal((N, L, D))
    h, cache = attended.run_forward(x, h0, params, V)
    state, context = attended.decoding_inputs(h0, V, params)
    for t in range(T):
        state = attended.run_step(x[:, t], state, params, context, np.arange(N))
        error = max(_scale_error(state[0], h[:, t]), _scale_error(state[-1], attended.attention_weights(cache)[:, t]))
        if error > FLOAT64_MATCH_LIMIT:
            raise _CheckFailed(f"attention step {t} differs from the forward by {error:.1e} (limit "
                               f"{FLOAT64_MATCH_LIMIT:.0e})")
    return f"{T} steps agree"


def _in_shards(models, params, features, captions, threads):
    """[(loss, grads, greedy captions, beam-2 captions)] of each model with ``params``, on ``threads`` threads."""
    from captionkit import parallel

    results = []
    previous = parallel.set_num_threads(threads)
    try:
        for model in models:
            model.params = dict(params)
            results.append(model.loss(features, captions) + (model.sample(features, max_length=T + 2),
                                                              model.sample(features, max_length=T + 2, beam_size=2)))
    finally:
        parallel.set_num_threads(previous)
    return results


def _check_attention_matches_numpy(cell_type):
    def check(cell, seed):
        return _attention_matches_numpy(cell_type, cell, seed)

    return check


def _attention_matches_numpy(cell_type, cell, seed):
    """On the engine, soft attention over ``cell`` gives the numpy reference's numbers: forward, weights, backward
    (with a penalty's gradient of the weights) and steps of rows reading any image, float64 and float32; and a model
    of it cut into shards on threads gives the numpy model's loss, gradients, greedy and beam captions."""
    from captionkit.attention import AttendedCell, SoftAttention
    from captionkit.model import CaptioningRNN

    compiled = AttendedCell(cell, SoftAttention(), A, backend="cython")
    reference = AttendedCell(type(cell)(backend="numpy"), SoftAttention(), A, backend="numpy")
    if not compiled.compiled:
        raise _CheckFailed("soft attention over this cell does not run on the engine")
    rng = np.random.RandomState(seed + 4)
    base = {k: v + 0.1 * rng.standard_normal(v.shape)
            for k, v in reference.init_params_for(CellSizes(W, H, D, D), rng).items()}
    inputs = (rng.standard_normal((N, T, W)), rng.standard_normal((N, H)), rng.standard_normal((N, L, D)),
              rng.standard_normal((N, T, H)), rng.standard_normal((N, T, L)))
    images = np.arange(N + 1, dtype=np.int64)[::-1] % N  # rows reading images out of order, one image twice
    worst = 0.0
    for dtype, limit in ((np.float64, FLOAT64_MATCH_LIMIT), (np.float32, FLOAT32_MATCH_LIMIT)):
        params = {k: v.astype(dtype) for k, v in base.items()}
        x, h0, V, dh, dalphas = (a.astype(dtype) for a in inputs)
        pairs = {}
        for label, attended in (("got", compiled), ("want", reference)):
            h, cache = attended.run_forward(x, h0, params, V)
            dx, dh0, dV, grads = attended.run_backward(dh, cache, dalphas)
            state, context = attended.decoding_inputs(h0, V, params)
            stepped = attended.run_step(x[images, 0], tuple(s[images] for s in state), params, context, images)
            values = {"h": h, "alpha": attended.attention_weights(cache), "dx": dx, "dh0": dh0, "dV": dV,
                      "step h": stepped[0], "step alpha": stepped[-1], **{f"d{k}": v for k, v in grads.items()}}
            for what, value in values.items():
                pairs.setdefault(what, {})[label] = value
        for what, pair in pairs.items():
            error = _scale_error(pair["got"], pair["want"])
            if error > limit:
                raise _CheckFailed(f"{np.dtype(dtype)} {what} with attention differs from the numpy reference by "
                                   f"{error:.2e} (limit {limit:.0e})")
            if dtype == np.float64:
                worst = max(worst, error)
    rows, threads = 12, 3
    models = [CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64,
                            backend=backend, seed=seed, regions=L, attention="soft", attention_dim=A)
              for backend in ("cython", "numpy")]
    models[0].cell = compiled
    params = {k: 0.5 * rng.standard_normal(v.shape) for k, v in models[0].params.items()}
    features = rng.standard_normal((rows, L, D))
    captions = rng.randint(len(VOCAB), size=(rows, T + 1))
    captions[:, 0] = VOCAB["<START>"]
    results = _in_shards(models, params, features, captions, threads)
    (loss, grads, greedy, beam), (loss_ref, grads_ref, greedy_ref, beam_ref) = results
    errors = {"loss": _scale_error(np.array(loss), np.array(loss_ref)),
              **{f"d{k}": _scale_error(grads[k], grads_ref[k]) for k in grads_ref}}
    name = max(errors, key=errors.get)
    if errors[name] > FLOAT64_MATCH_LIMIT:
        raise _CheckFailed(f"with attention in {threads} shards the model's {name} differs from the numpy model's by "
                           f"{errors[name]:.2e} (limit {FLOAT64_MATCH_LIMIT:.0e})")
    if not (np.array_equal(greedy, greedy_ref) and np.array_equal(beam, beam_ref)):
        raise _CheckFailed(f"with attention in {threads} shards greedy or beam captions differ from the numpy model's")
    return (f"float64 max difference {max(worst, errors[name]):.1e} (limit {FLOAT64_MATCH_LIMIT:.0e}); float32 "
            f"within {FLOAT32_MATCH_LIMIT:.0e}; {threads} shards: greedy and beam captions equal")


def _summarise_gradients(errors, limit):
    worst = max(errors, key=errors.get)
    bad = {k: v for k, v in errors.items() if v > limit}
    if bad:
        listed = ", ".join(f"d{k} {v:.1e}" for k, v in bad.items())
        raise _CheckFailed(f"analytic and numerical gradients disagree: {listed} (limit {limit:.0e})")
    return f"max rel error {errors[worst]:.1e} (d{worst}; limit {limit:.0e})"


def _check_matches_numpy(cell, seed):
    reference = type(cell)(backend="numpy")
    worst, where = 0.0, ""
    for dtype, limit in ((np.float64, FLOAT64_MATCH_LIMIT), (np.float32, FLOAT32_MATCH_LIMIT)):
        x, h0, params, dh = _sample(cell, dtype, seed)
        got = _run(cell, x, h0, params, dh)
        want = _run(reference, x, h0, params, dh)
        pairs = {"h": (got[0], want[0]), "dx": (got[1], want[1]), "dh0": (got[2], want[2])}
        pairs.update({f"d{k}": (got[3][k], want[3][k]) for k in want[3]})
        for what, (a, b) in pairs.items():
            error = _scale_error(a, b)
            if error > limit:
                raise _CheckFailed(f"{np.dtype(dtype)} {what} differs from the numpy path by {error:.2e} "
                                   f"(limit {limit:.0e})")
            if dtype == np.float64 and error >= worst:
                worst, where = error, what
    return f"float64 max difference {worst:.2e} ({where}; limit {FLOAT64_MATCH_LIMIT:.0e}); float32 within 1e-4"


def _check_shards(cell_type):
    def check(cell, seed):
        return _shards(cell_type, cell, seed)

    return check


def _shards(cell_type, cell, seed):
    from captionkit.model import CaptioningRNN

    if not compiled_available():
        return "not run: captionkit's compiled kernels are not built, so no model runs this cell in shards"
    rows, threads = 12, 3
    models = [CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64,
                            backend=backend, seed=seed) for backend in ("cython", "numpy")]
    models[0].cell = cell  # the cell under test, in a model that cuts its batch into shards on threads
    rng = np.random.RandomState(seed + 2)
    params = {k: 0.5 * rng.standard_normal(v.shape) for k, v in models[0].params.items()}
    features = rng.standard_normal((rows, D))
    captions = rng.randint(len(VOCAB), size=(rows, T + 1))
    captions[:, 0] = VOCAB["<START>"]
    captions[::4, T // 2 + 1:] = VOCAB["<NULL>"]
    results = _in_shards(models, params, features, captions, threads)
    (loss, grads, captions_out, beam_out), (loss_ref, grads_ref, captions_ref, beam_ref) = results
    errors = {"loss": _scale_error(np.array(loss), np.array(loss_ref))}
    errors.update({f"d{k}": _scale_error(grads[k], grads_ref[k]) for k in grads_ref})
    worst = max(errors, key=errors.get)
    if errors[worst] > FLOAT64_MATCH_LIMIT:
        raise _CheckFailed(f"in {threads} shards on {threads} threads the model's {worst} differs from the numpy "
                           f"model's by {errors[worst]:.2e} (limit {FLOAT64_MATCH_LIMIT:.0e})")
    for kind, got, want in (("greedy", captions_out, captions_ref), ("beam search", beam_out, beam_ref)):
        if not np.array_equal(got, want):
            raise _CheckFailed(f"in {threads} shards on {threads} threads {kind} captions differ from the numpy "
                               "model's")
    return (f"{threads} shards on {threads} threads: max difference from the numpy model {errors[worst]:.1e} "
            f"({worst}); greedy and beam captions equal")


def _check_rejects_wrong_shapes(cell, seed):
    x, h0, params, _ = _sample(cell, np.float64, seed)

    def expect_value_error(what, call, must_name=None):
        try:
            call()
        except ValueError as exc:
            if must_name is not None and must_name not in str(exc):
                raise _CheckFailed(f"{what}: the ValueError does not name {must_name!r}: {exc}") from exc
            return
        except Exception as exc:
            raise _CheckFailed(f"{what}: raised {type(exc).__name__} ({exc}) instead of a ValueError") from exc
        raise _CheckFailed(f"{what}: accepted without an error")

    expect_value_error("forward with 2-D x", lambda: cell.forward(x[:, 0], h0, params))
    expect_value_error("forward with h0 of another N", lambda: cell.forward(x, np.vstack([h0, h0]), params))
    for name, value in params.items():
        wrong = dict(params, **{name: np.zeros((value.shape[0] + 1,) + value.shape[1:])})
        expect_value_error(f"forward with {name} of shape {wrong[name].shape}",
                           lambda: cell.forward(x, h0, wrong), must_name=name)
        missing = {k: v for k, v in params.items() if k != name}
        expect_value_error(f"forward without {name}", lambda: cell.forward(x, h0, missing), must_name=name)
    state = cell.initial_state(h0)
    expect_value_error("step with x of width W+1", lambda: cell.step(np.zeros((N, W + 1)), state, params))
    return f"forward rejects bad x, h0 and each of {len(params)} parameters; step rejects bad x"


def _checks(cell_type, compiled_path, attention=False):
    """The checks of one path of a cell; ``compiled_path``: the cell runs compiled (vs its numpy reference);
    ``attention``: also check it reading a grid through soft attention (gated cells: its gradients on the numpy
    path, the engine against the numpy reference on a compiled one)."""
    checks = [
        ("declares parameters", _check_declaration),
        ("parameters for the model's sizes", _check_model_sizes),
        ("runs without a context", _check_without_context),
        ("shapes and dtypes float64", _check_shapes(np.float64)),
        ("shapes and dtypes float32", _check_shapes(np.float32)),
        ("step matches forward float64", _check_step(np.float64)),
        ("step matches forward float32", _check_step(np.float32)),
        ("float32 agrees with float64", _check_float32),
        ("sequence gradients float64", _check_sequence_gradients),
        ("model loss gradients float64", _check_model_gradients(cell_type)),
        ("rejects wrong shapes", _check_rejects_wrong_shapes),
    ]
    if compiled_path:
        checks.insert(8, ("compiled matches numpy", _check_matches_numpy))
    if attention and compiled_path:
        checks.append(("attention on the engine matches numpy", _check_attention_matches_numpy(cell_type)))
    elif attention:
        checks += [("attention step matches forward float64", _check_attention_step),
                   ("attention model gradients float64", _check_attention_gradients(cell_type))]
    return checks


def _paths(cls, backends):
    """(label, make a cell, whether it runs compiled) for each path of ``cls`` on ``backends``: a gated cell with a
    compiled pointwise part is checked on the engine with its numpy pointwise part too, as a model runs it when
    that part is missing."""
    paths = []
    for backend in backends:
        paths.append((backend, lambda backend=backend: cls(backend=backend), backend == "cython"))
        if backend == "cython" and issubclass(cls, GatedCell) and cls.compiled_pointwise is not None:
            paths.append(("cython, numpy pointwise", lambda: _without_capsules(cls(backend="cython")), True))
    return paths


def _without_capsules(cell):
    cell.pointwise = dataclasses.replace(cell.pointwise, capsules=None)
    return cell


# ---------------------------------------------------------------------------------------------- entry points
def run_checks(cell_type, backends=None, seed=0):
    """Run every check on the registered cell ``cell_type`` and return a :class:`ConformanceReport`.

    ``backends`` is a sequence of ``"numpy"``/``"cython"``; ``"cython"`` checks a gated cell with a compiled pointwise
    part twice, with that part and with its numpy one (``"cython, numpy pointwise"``, as the engine runs a cell that
    has no compiled part). None means every path the model can run here: ``"numpy"``,
    and ``"cython"`` too for a cell with ``compiled = True`` when captionkit's compiled kernels are built (the model
    only ever asks for ``"cython"`` then; the report notes the skip). A cell that fails to load gives a report with
    one failed ``loads`` result. Raises ValueError only for a wrong ``backends`` argument.
    """
    try:
        origin = describe_cell(cell_type)
    except (UnknownCellError, CellConflictError) as exc:
        failure = CheckResult("loads", "-", False, str(exc))
        return ConformanceReport(str(cell_type), "no installed distribution", [failure])
    report = ConformanceReport(cell_type, origin)
    try:
        cls = get_cell(cell_type)
    except CellLoadError as exc:
        report.results.append(CheckResult("loads", "-", False, str(exc)))
        return report
    available = ("numpy", "cython") if cls.compiled else ("numpy",)
    if backends is None:
        backends = available
        if cls.compiled and not compiled_available():
            backends = ("numpy",)
            report.notes.append("cython path not checked: captionkit's compiled kernels are not built, so models "
                                "run this cell on numpy (ask for backend 'cython' to check it anyway)")
    backends = tuple(backends)
    unknown = [b for b in backends if b not in available]
    if unknown:
        raise ValueError(f"cell {cell_type!r} has no backend {unknown[0]!r}; it has {', '.join(available)}")
    for label, make_cell, compiled_path in _paths(cls, backends):
        try:
            cell = make_cell()
        except Exception as exc:  # plugin code may raise anything
            report.results.append(CheckResult("instantiates", label, False, f"{type(exc).__name__}: {exc}"))
            continue
        checks = _checks(cell_type, compiled_path, attention=issubclass(cls, GatedCell))
        # The compiled model runs every cell in shards on threads: a compiled path, or a cell with no other path.
        if compiled_path or not cls.compiled:
            checks.append(("shards on threads match the numpy model", _check_shards(cell_type)))
        for check_name, check in checks:
            try:
                detail = check(cell, seed)
                report.results.append(CheckResult(check_name, label, True, detail))
            except _CheckFailed as exc:
                report.results.append(CheckResult(check_name, label, False, str(exc)))
            except Exception as exc:  # plugin code may raise anything; name what raised it
                report.results.append(CheckResult(check_name, label, False, f"raised {type(exc).__name__}: {exc}"))
    return report


def check_cell(cell_type, backends=None, seed=0):
    """Run :func:`run_checks` and raise :class:`ConformanceError` (an AssertionError) unless every check passes.

    Returns the report when the cell conforms, so ``check_cell("gru")`` is a complete test.
    """
    report = run_checks(cell_type, backends=backends, seed=seed)
    if not report.ok:
        raise ConformanceError(report)
    return report
