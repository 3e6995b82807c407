"""What a checkpoint holds: a model's spec and parameters plus everything needed to resume its training
bit-identically, written and read as the members of an npz container (:mod:`captionkit.checkpoint_container`).

A checkpoint is an uncompressed ``.npz`` archive of plain numeric arrays, parsed as data only (``allow_pickle=False``,
no object arrays, metadata as JSON), so a crafted file can fail to load but can never run code:

- ``meta``: uint8, the UTF-8 bytes of a JSON object: ``format`` ("captionkit-checkpoint"), ``format_version``,
  ``captionkit_version``, ``model`` (:meth:`ModelSpec.to_meta`: cell_type, input_dim, wordvec_dim, hidden_dim,
  dtype), ``idx_to_word``, ``precision`` (how the model's products run, :data:`captionkit.precision.PRECISIONS`;
  a checkpoint written before it existed reads as "fp32"),
  ``config`` (the training options), and, when saved from a solver, ``training`` (epoch, iteration, the
  optimiser's scalar settings per parameter, the minibatch sampler's RNG position);
- ``param/NAME``: each model parameter, in the model's dtype;
- ``optim/NAME/KEY``: the optimiser's array state per parameter (Adam's ``m`` and ``v``, momentum's ``velocity``...);
- ``rng/keys``: the 624 uint32 words of the sampler's MT19937 state; ``loss_history``: float64, one per iteration.

Writes are atomic (:mod:`captionkit.atomicfile`): a crash mid-write leaves the previous checkpoint untouched. Building
a model from a checkpoint is :mod:`captionkit.loading`'s: this module knows the model only as the spec it declares.
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captionkit import optim
from captionkit._about import __version__
from captionkit.atomicfile import atomic_write
from captionkit.checkpoint_container import CheckpointError, member_headers, open_archive, read_member
from captionkit.safeio import parse_json
from captionkit.vocabulary import Vocabulary
from captionkit.options import validate_options
from captionkit.plugins import PluginLoadError, UnknownPluginError
from captionkit.precision import check_precision
from captionkit.runs import ConfigError
from captionkit.spec import ModelSpec

__all__ = ["FORMAT", "FORMAT_VERSION", "RUN_STATE_FIELDS", "Checkpoint", "CheckpointError", "read_checkpoint",
           "save_checkpoint"]

FORMAT = "captionkit-checkpoint"
FORMAT_VERSION = 1
_MT_KEYS = 624  # words of MT19937 state
_MAX_ITERATION = 2**53  # iterations and epochs: exact in a float64, far beyond any run
# A training run's bookkeeping beside the solver: seconds trained in all sessions, the monitored score's best value
# (None before the first validation) and iteration, validations since it improved, and whether patience ran out.
RUN_STATE_FIELDS = ("elapsed", "monitor", "best", "best_iteration", "stale", "stopped_early")


@dataclass
class Checkpoint:
    """The parsed content of a checkpoint file (see the module docstring for the layout).

    ``training`` is None for a model-only checkpoint; otherwise it holds the solver state in the form
    :meth:`CaptioningSolver.load_state_dict` takes (epoch, iteration, loss_history, optim_configs, rng_state).
    """

    path: Path
    spec: ModelSpec
    idx_to_word: list
    config: dict
    params: dict
    training: dict | None = None
    meta: dict = field(default_factory=dict)
    run_state: dict = field(default_factory=dict)
    precision: str = "fp32"

    @property
    def model(self):
        """The checkpoint's ``model`` record (cell_type, input_dim, wordvec_dim, hidden_dim, dtype)."""
        return self.spec.to_meta()

    @property
    def word_to_idx(self):
        return {word: idx for idx, word in enumerate(self.idx_to_word)}

    @property
    def iteration(self):
        return 0 if self.training is None else self.training["iteration"]

    @property
    def epoch(self):
        return 0 if self.training is None else self.training["epoch"]

# ---------------------------------------------------------------------------------------------------------- saving
def _json_scalar(value, where):
    """A JSON-safe Python scalar for an optimiser setting (float, int or bool)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TypeError(f"cannot store {where} = {value!r} in a checkpoint (only numbers and arrays are stored)")


def save_checkpoint(path, model, solver=None, config=None, run_state=None):
    """Write ``model`` (and, if given, ``solver``'s training state and the ``config`` dict) to ``path`` atomically.

    ``run_state``: what a training run keeps across resumes beside the solver (:data:`RUN_STATE_FIELDS`: time spent
    so far, the monitored score's best and the validations since). Returns the path. ``config`` must be
    JSON-serialisable (the training options).
    """
    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "captionkit_version": __version__,
        "model": model.spec.to_meta(),
        "idx_to_word": [model.idx_to_word[i] for i in range(model.vocab_size)],
        "precision": model.precision,
        "config": dict(config or {}),
    }
    if run_state is not None:
        meta["run_state"] = dict(run_state)
    arrays = {}
    for name, value in model.params.items():
        if "/" in name:
            raise ValueError(f"parameter name {name!r} contains '/', which the checkpoint format reserves")
        arrays[f"param/{name}"] = np.ascontiguousarray(value)
    if solver is not None:
        state = solver.state_dict()
        algorithm, keys, pos, has_gauss, cached_gaussian = state["rng_state"]
        scalars = {}
        for name, conf in state["optim_configs"].items():
            scalars[name] = {}
            for key, value in conf.items():
                if isinstance(value, np.ndarray):
                    arrays[f"optim/{name}/{key}"] = value
                else:
                    scalars[name][key] = _json_scalar(value, f"optim_configs[{name!r}][{key!r}]")
        arrays["rng/keys"] = np.asarray(keys, dtype=np.uint32)
        arrays["loss_history"] = np.asarray(state["loss_history"], dtype=np.float64)
        meta["training"] = {
            "epoch": int(state["epoch"]),
            "iteration": int(state["iteration"]),
            "optim_scalars": scalars,
            "rng": {"algorithm": algorithm, "pos": int(pos), "has_gauss": int(has_gauss),
                    "cached_gaussian": float(cached_gaussian)},
        }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


# --------------------------------------------------------------------------------------------------------- loading
def _read_meta(path, members):
    """-> (the checked meta object, the ModelSpec its ``model`` record declares)."""
    raw = members.get("meta")
    if raw is None:
        raise CheckpointError(f"{path}: no 'meta' member; not a captionkit checkpoint")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: 'meta' has dtype {raw.dtype} and shape {raw.shape}, expected uint8 bytes")
    meta = parse_json(raw.tobytes(), f"{path}: 'meta'", "document", CheckpointError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: 'meta' does not declare format {FORMAT!r}; not a captionkit checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {meta.get('format_version')!r}; this captionkit "
            f"({__version__}) reads version {FORMAT_VERSION}"
        )
    if not isinstance(meta.get("config", {}), dict):
        raise CheckpointError(f"{path}: meta 'config' must be a JSON object")
    _check_vocabulary(path, meta.get("idx_to_word"))
    try:
        spec = ModelSpec.from_meta(meta.get("model"), len(meta["idx_to_word"]), path)
        check_precision(meta.get("precision", "fp32"), spec.dtype, f"{path}: meta 'precision'")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return meta, spec


def _check_vocabulary(path, idx_to_word):
    if not isinstance(idx_to_word, list):  # JSON gives lists; Vocabulary would also take a tuple
        raise CheckpointError(f"{path}: meta 'idx_to_word' must be a list of strings")
    Vocabulary(idx_to_word, source=path, key="meta 'idx_to_word'", error=CheckpointError)


def _check_array(path, key, value, shape, dtype, model=""):
    if value.shape != tuple(shape):
        raise CheckpointError(f"{path}: {key!r} has shape {value.shape}, expected {tuple(shape)}"
                              + (f" for the declared model ({model})" if model else ""))
    if value.dtype != dtype:
        raise CheckpointError(f"{path}: {key!r} has dtype {value.dtype}, expected {dtype}")
    if not np.isfinite(value).all():
        raise CheckpointError(f"{path}: {key!r} holds non-finite values")


def _read_training(path, meta, members, params):
    training = meta.get("training")
    if training is None:
        return None
    if not isinstance(training, dict):
        raise CheckpointError(f"{path}: meta 'training' must be a JSON object")
    for key in ("epoch", "iteration"):
        value = training.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _MAX_ITERATION:
            raise CheckpointError(f"{path}: meta 'training.{key}' is {value!r}, expected an integer >= 0 "
                                  f"and below 2**53")
    if training["epoch"] > training["iteration"]:
        raise CheckpointError(f"{path}: meta 'training.epoch' is {training['epoch']} after only "
                              f"{training['iteration']} iterations")
    scalars = training.get("optim_scalars")
    if not isinstance(scalars, dict) or set(scalars) != set(params):
        raise CheckpointError(f"{path}: meta 'training.optim_scalars' must hold one object per parameter")
    optim_configs = {}
    for name, conf in scalars.items():
        if not isinstance(conf, dict) or not all(
            isinstance(v, (int, float)) and (isinstance(v, bool) or math.isfinite(v)) for v in conf.values()
        ):
            raise CheckpointError(f"{path}: meta 'training.optim_scalars.{name}' must map names to finite numbers")
        optim_configs[name] = dict(conf)
    for key, value in members.items():
        if key.startswith("optim/"):
            parts = key.split("/")
            if len(parts) != 3 or parts[1] not in params:
                raise CheckpointError(f"{path}: {key!r} is optimiser state for no parameter of this model")
            _check_array(path, key, value, params[parts[1]].shape, params[parts[1]].dtype)
            optim_configs[parts[1]][parts[2]] = value
    for name, conf in optim_configs.items():
        problem = optim.state_problem(conf)
        if problem:
            raise CheckpointError(f"{path}: the optimiser state of {name!r} cannot be trained from: {problem}")
    rng = training.get("rng")
    keys = members.get("rng/keys")
    if (not isinstance(rng, dict) or rng.get("algorithm") != "MT19937" or keys is None
            or keys.dtype != np.uint32 or keys.shape != (_MT_KEYS,)
            or not isinstance(rng.get("pos"), int) or not 0 <= rng["pos"] <= _MT_KEYS
            or rng.get("has_gauss") not in (0, 1) or not isinstance(rng.get("cached_gaussian"), (int, float))):
        raise CheckpointError(f"{path}: the minibatch sampler's RNG state ('rng/keys', meta 'training.rng') is "
                              "missing or malformed")
    history = members.get("loss_history")
    if history is None or history.dtype != np.float64 or history.shape != (training["iteration"],):
        raise CheckpointError(f"{path}: 'loss_history' is missing or not a float64 vector of one loss per iteration "
                              f"({training['iteration']})")
    if not np.isfinite(history).all():
        raise CheckpointError(f"{path}: 'loss_history' holds non-finite values")
    return {
        "epoch": training["epoch"],
        "iteration": training["iteration"],
        "loss_history": history.tolist(),
        "optim_configs": optim_configs,
        "rng_state": ("MT19937", keys, rng["pos"], rng["has_gauss"], float(rng["cached_gaussian"])),
    }


def _expected_shapes(path, spec):
    """``{param name: shape}`` of the declared model, computed without building it."""
    try:
        cell = spec.build_cell()
    except (UnknownPluginError, PluginLoadError) as exc:  # its cell's or its attention's
        raise CheckpointError(f"{path}: the checkpoint was made with {spec.plugins()}: {exc}") from exc
    return spec.parameter_shapes(cell)


def _read_run_state(path, meta):
    state = meta.get("run_state", {})
    if not isinstance(state, dict) or (state and set(state) != set(RUN_STATE_FIELDS)):
        raise CheckpointError(f"{path}: meta 'run_state' must be an object with {', '.join(RUN_STATE_FIELDS)}")
    if not state:
        return {}
    iteration = meta.get("training", {}).get("iteration", 0) if isinstance(meta.get("training"), dict) else 0
    checks = {
        "elapsed": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
        "monitor": lambda v: isinstance(v, str),
        "best": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
        "best_iteration": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                                  and 0 <= v <= iteration),
        "stale": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= iteration,
        "stopped_early": lambda v: isinstance(v, bool),
    }
    for key, check in checks.items():
        if not check(state[key]):
            raise CheckpointError(f"{path}: meta 'run_state.{key}' is {state[key]!r}, which cannot be right")
    if (state["best"] is None) != (state["best_iteration"] is None):
        raise CheckpointError(f"{path}: meta 'run_state' has a best value without its iteration, or the reverse")
    return dict(state)


def _check_stored_config(path, config):
    try:
        validate_options(config, f"{path} (stored config)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def _check_declared(path, headers, meta, spec, shapes):
    """Every member's declared shape and dtype against the metadata, before any array is read."""
    dtype = np.dtype(spec.dtype)
    stored = {key[len("param/"):] for key in headers if key.startswith("param/")}
    if stored != set(shapes):
        missing, extra = sorted(set(shapes) - stored), sorted(stored - set(shapes))
        raise CheckpointError(
            f"{path}: parameters do not match cell {spec.cell_type!r}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
        )
    model = spec.describe()
    expected = {f"param/{name}": (shape, dtype) for name, shape in shapes.items()}
    training = meta.get("training")
    if isinstance(training, dict):
        iteration = training.get("iteration")
        if isinstance(iteration, int) and not isinstance(iteration, bool) and 0 <= iteration < _MAX_ITERATION:
            expected["loss_history"] = ((iteration,), np.dtype(np.float64))
        expected["rng/keys"] = ((_MT_KEYS,), np.dtype(np.uint32))
        for key in headers:
            parts = key.split("/")
            if parts[0] == "optim" and len(parts) == 3 and parts[1] in shapes:
                expected[key] = (shapes[parts[1]], dtype)
    for key, (shape, kind) in expected.items():
        if key not in headers:
            continue
        found_shape, found_dtype = headers[key]
        if found_shape != tuple(shape):
            where = f" for the declared model ({model})" if key.startswith("param/") else ""
            raise CheckpointError(f"{path}: {key!r} has shape {found_shape}, expected {tuple(shape)}{where}")
        if found_dtype != kind:
            raise CheckpointError(f"{path}: {key!r} has dtype {found_dtype}, expected {kind}")


def read_checkpoint(path):
    """Parse and validate the checkpoint file at ``path`` -> :class:`Checkpoint`.

    Raises :class:`CheckpointError` naming the file and the member at fault for a missing, truncated, corrupt or
    crafted file (pickled data is refused without being unpickled), or one whose arrays do not fit its declared
    cell, dimensions, vocabulary and training state. Sizes are checked against each other and against the bytes the
    file holds before any array is read, so a small crafted file cannot make it allocate much.
    """
    path = Path(path)
    with open_archive(path) as archive:
        headers = member_headers(path)
        known = {"meta", "rng/keys", "loss_history"}
        unknown = [k for k in headers if k not in known and not k.startswith(("param/", "optim/"))]
        if unknown:
            raise CheckpointError(f"{path}: unexpected members {sorted(unknown)}; not a captionkit checkpoint")
        meta, spec = _read_meta(path, {"meta": read_member(path, archive, "meta")} if "meta" in headers else {})
        _check_stored_config(path, meta.get("config", {}))
        shapes = _expected_shapes(path, spec)
        _check_declared(path, headers, meta, spec, shapes)
        members = {key: read_member(path, archive, key) for key in headers}
    dtype = np.dtype(spec.dtype)
    described = spec.describe()
    params = {}
    for name, shape in shapes.items():
        value = members[f"param/{name}"]
        _check_array(path, f"param/{name}", value, shape, dtype, described)
        params[name] = value
    return Checkpoint(
        path=path,
        spec=spec,
        idx_to_word=list(meta["idx_to_word"]),
        config=dict(meta.get("config", {})),
        params=params,
        training=_read_training(path, meta, members, params),
        meta=meta,
        run_state=_read_run_state(path, meta),
        precision=meta.get("precision", "fp32"),
    )
