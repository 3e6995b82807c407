"""Checkpoints: a model's parameters plus everything needed to resume its training bit-identically.

A checkpoint is an uncompressed ``.npz`` archive of plain numeric arrays, parsed as data only (``allow_pickle=False``,
no object arrays, metadata as JSON), so a crafted file can fail to load but can never run code:

- ``meta``: uint8, the UTF-8 bytes of a JSON object: ``format`` ("captionkit-checkpoint"), ``format_version``,
  ``captionkit_version``, ``model`` (cell_type, input_dim, wordvec_dim, hidden_dim, dtype), ``idx_to_word``,
  ``config`` (the training options), and, when saved from a solver, ``training`` (epoch, iteration, the
  optimiser's scalar settings per parameter, the minibatch sampler's RNG position);
- ``param/NAME``: each model parameter, in the model's dtype;
- ``optim/NAME/KEY``: the optimiser's array state per parameter (Adam's ``m`` and ``v``, momentum's ``velocity``...);
- ``rng/keys``: the 624 uint32 words of the sampler's MT19937 state; ``loss_history``: float64, one per iteration.

Writes are atomic (:mod:`captionkit.atomicfile`): a crash mid-write leaves the previous checkpoint untouched.
"""
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captionkit import __version__, optim
from captionkit.atomicfile import atomic_write
from captionkit.layout import SPECIAL_TOKENS

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "CheckpointError", "load_model", "read_checkpoint",
           "save_checkpoint"]

FORMAT = "captionkit-checkpoint"
FORMAT_VERSION = 1
_MT_KEYS = 624  # words of MT19937 state
_MODEL_FIELDS = {"cell_type": str, "input_dim": int, "wordvec_dim": int, "hidden_dim": int, "dtype": str}
# A training run's bookkeeping beside the solver: seconds trained in all sessions, the monitored score's best value
# (None before the first validation) and iteration, validations since it improved, and whether patience ran out.
RUN_STATE_FIELDS = ("elapsed", "monitor", "best", "best_iteration", "stale", "stopped_early")


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, crafted, or does not fit what it is loaded for."""


@dataclass
class Checkpoint:
    """The parsed content of a checkpoint file (see the module docstring for the layout).

    ``training`` is None for a model-only checkpoint; otherwise it holds the solver state in the form
    :meth:`CaptioningSolver.load_state_dict` takes (epoch, iteration, loss_history, optim_configs, rng_state).
    """

    path: Path
    model: dict
    idx_to_word: list
    config: dict
    params: dict
    training: dict | None = None
    meta: dict = field(default_factory=dict)
    run_state: dict = field(default_factory=dict)

    @property
    def word_to_idx(self):
        return {word: idx for idx, word in enumerate(self.idx_to_word)}

    @property
    def iteration(self):
        return 0 if self.training is None else self.training["iteration"]

    @property
    def epoch(self):
        return 0 if self.training is None else self.training["epoch"]

    def build_model(self, backend=None):
        """A :class:`CaptioningRNN` with this checkpoint's cell, dimensions, vocabulary and parameters."""
        model = _empty_model(self.path, self.model, self.idx_to_word, backend)
        model.params = {name: value.copy() for name, value in self.params.items()}
        return model


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
        "model": {
            "cell_type": model.cell_type,
            "input_dim": model.input_dim,
            "wordvec_dim": model.wordvec_dim,
            "hidden_dim": model.hidden_dim,
            "dtype": np.dtype(model.dtype).name,
        },
        "idx_to_word": [model.idx_to_word[i] for i in range(model.vocab_size)],
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
def _open_archive(path):
    """np.load the archive as data only; map every failure to a CheckpointError naming the file."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file (pass a checkpoint .npz or a run directory)")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc
    # Look at the first bytes ourselves: np.load would report any unknown content as "pickled data".
    if magic[:1] == b"\x80":
        raise CheckpointError(
            f"{path}: the file is a Python pickle, which captionkit never loads (checkpoints are plain arrays); "
            "refusing it"
        )
    if magic != b"PK\x03\x04":
        what = "empty" if not magic else "a single .npy array" if magic == b"\x93NUM" else "not an .npz archive"
        raise CheckpointError(f"{path}: not a captionkit checkpoint ({what})")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint; the file is truncated or corrupt ({exc})") from exc


# Bounds on what a checkpoint may declare before any of it is read (checkpoints captionkit writes are far below).
_MAX_META_BYTES = 64 * 2**20  # the JSON metadata: vocabulary and options
_MAX_INFLATED_BYTES = 16 * 2**20  # a compressed member (captionkit stores every member uncompressed)
_MAX_ITERATION = 2**53  # iterations and epochs: exact in a float64, far beyond any run


def _member_headers(path):
    """``{key: (shape, dtype)}`` of every member of the npz at ``path``, read from the zip's directory and each
    member's .npy header only: no array is read. A member whose declared size does not match the bytes the file
    holds for it, a compressed member over the bound, and an object array are refused here, before any allocation.
    """
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise CheckpointError(f"{path}: member {info.filename!r} is not an .npy array; not a captionkit "
                                          "checkpoint")
                key = info.filename[:-len(".npy")]
                if key in headers:
                    raise CheckpointError(f"{path}: member {key!r} appears twice; the file is crafted or corrupt")
                try:
                    with archive.open(info) as member:
                        version = np.lib.format.read_magic(member)
                        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                        if read_header is None:
                            raise CheckpointError(f"{path}: member {key!r} is an .npy array of format {version}, which "
                                                  "captionkit does not read")
                        shape, _, dtype = read_header(member, max_header_size=10000)
                        data_offset = member.tell()
                except CheckpointError:
                    raise
                except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                    raise CheckpointError(f"{path}: member {key!r} cannot be read; the file is truncated or corrupt "
                                          f"({exc})") from exc
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: member {key!r} is an object array (pickled Python objects), which "
                                          "captionkit never loads; refusing the checkpoint")
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if info.compress_type == zipfile.ZIP_STORED:
                    if info.file_size != data_offset + declared:
                        raise CheckpointError(
                            f"{path}: member {key!r} declares {shape} {dtype} ({declared} bytes) but holds "
                            f"{info.file_size - data_offset}; the file is crafted or corrupt")
                elif declared > _MAX_INFLATED_BYTES or info.file_size != data_offset + declared:
                    raise CheckpointError(
                        f"{path}: member {key!r} is compressed and declares {declared} bytes; captionkit reads "
                        f"compressed members of at most {_MAX_INFLATED_BYTES} bytes (it writes checkpoints "
                        "uncompressed)")
                headers[key] = (tuple(shape), dtype)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint; the file is truncated or corrupt ({exc})") from exc
    if headers.get("meta", ((0,), None))[0][0] > _MAX_META_BYTES:
        raise CheckpointError(f"{path}: 'meta' declares {headers['meta'][0][0]} bytes, more than the "
                              f"{_MAX_META_BYTES} captionkit reads")
    return headers


def _read_member(path, archive, key):
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc):
            raise CheckpointError(
                f"{path}: member {key!r} is an object array (pickled Python objects), which captionkit never "
                "loads; refusing the checkpoint"
            ) from exc
        raise CheckpointError(f"{path}: member {key!r} cannot be read ({exc}); the file is corrupt") from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(
            f"{path}: member {key!r} cannot be read; the file is truncated or corrupt ({exc})"
        ) from exc


def _read_meta(path, members):
    raw = members.get("meta")
    if raw is None:
        raise CheckpointError(f"{path}: no 'meta' member; not a captionkit checkpoint")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: 'meta' has dtype {raw.dtype} and shape {raw.shape}, expected uint8 bytes")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: 'meta' is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: 'meta' does not declare format {FORMAT!r}; not a captionkit checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {meta.get('format_version')!r}; this captionkit "
            f"({__version__}) reads version {FORMAT_VERSION}"
        )
    model = meta.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: 'meta' has no 'model' object")
    for key, kind in _MODEL_FIELDS.items():
        value = model.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
            expected = "an integer >= 1" if kind is int else "a string"
            raise CheckpointError(f"{path}: meta 'model.{key}' is {value!r}, expected {expected}")
    if model["dtype"] not in ("float32", "float64"):
        raise CheckpointError(f"{path}: meta 'model.dtype' is {model['dtype']!r}, expected float32 or float64")
    if not isinstance(meta.get("config", {}), dict):
        raise CheckpointError(f"{path}: meta 'config' must be a JSON object")
    _check_vocabulary(path, meta.get("idx_to_word"))
    return meta


def _check_vocabulary(path, idx_to_word):
    if not isinstance(idx_to_word, list) or not all(isinstance(w, str) for w in idx_to_word):
        raise CheckpointError(f"{path}: meta 'idx_to_word' must be a list of strings")
    if len(set(idx_to_word)) != len(idx_to_word):
        raise CheckpointError(f"{path}: meta 'idx_to_word' lists a word twice")
    for token, idx in SPECIAL_TOKENS.items():
        if idx >= len(idx_to_word) or idx_to_word[idx] != token:
            raise CheckpointError(f"{path}: meta 'idx_to_word'[{idx}] must be {token}")


def _empty_model(path, model_meta, idx_to_word, backend=None):
    """A freshly initialised model of the checkpoint's architecture (its parameters are then replaced)."""
    from captionkit.cells import CellLoadError, UnknownCellError
    from captionkit.model import CaptioningRNN

    try:
        return CaptioningRNN(
            {word: idx for idx, word in enumerate(idx_to_word)},
            input_dim=model_meta["input_dim"],
            wordvec_dim=model_meta["wordvec_dim"],
            hidden_dim=model_meta["hidden_dim"],
            cell_type=model_meta["cell_type"],
            dtype=np.dtype(model_meta["dtype"]).type,
            backend=backend,
            seed=0,
        )
    except (UnknownCellError, CellLoadError) as exc:
        raise CheckpointError(f"{path}: the checkpoint was made with cell {model_meta['cell_type']!r}: {exc}") from exc


def _describe_model(model_meta, vocab_size):
    return (f"cell {model_meta['cell_type']!r} with input_dim={model_meta['input_dim']}, "
            f"wordvec_dim={model_meta['wordvec_dim']}, hidden_dim={model_meta['hidden_dim']} and {vocab_size} words")


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


def _expected_shapes(path, model_meta, vocab_size):
    """``{param name: shape}`` of the declared model, computed without building it."""
    from captionkit.cells import CellLoadError, UnknownCellError, get_cell
    from captionkit.model import parameter_shapes

    try:
        cell = get_cell(model_meta["cell_type"])()
    except (UnknownCellError, CellLoadError) as exc:
        raise CheckpointError(f"{path}: the checkpoint was made with cell {model_meta['cell_type']!r}: {exc}") from exc
    return parameter_shapes(cell, model_meta["input_dim"], model_meta["wordvec_dim"], model_meta["hidden_dim"],
                            vocab_size)


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
    from captionkit.options import validate_options
    from captionkit.runs import ConfigError

    try:
        validate_options(config, f"{path} (stored config)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def _check_declared(path, headers, meta, shapes):
    """Every member's declared shape and dtype against the metadata, before any array is read."""
    dtype = np.dtype(meta["model"]["dtype"])
    stored = {key[len("param/"):] for key in headers if key.startswith("param/")}
    if stored != set(shapes):
        missing, extra = sorted(set(shapes) - stored), sorted(stored - set(shapes))
        raise CheckpointError(
            f"{path}: parameters do not match cell {meta['model']['cell_type']!r}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
        )
    model = _describe_model(meta["model"], len(meta["idx_to_word"]))
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
    with _open_archive(path) as archive:
        headers = _member_headers(path)
        known = {"meta", "rng/keys", "loss_history"}
        unknown = [k for k in headers if k not in known and not k.startswith(("param/", "optim/"))]
        if unknown:
            raise CheckpointError(f"{path}: unexpected members {sorted(unknown)}; not a captionkit checkpoint")
        meta = _read_meta(path, {"meta": _read_member(path, archive, "meta")} if "meta" in headers else {})
        _check_stored_config(path, meta.get("config", {}))
        shapes = _expected_shapes(path, meta["model"], len(meta["idx_to_word"]))
        _check_declared(path, headers, meta, shapes)
        members = {key: _read_member(path, archive, key) for key in headers}
    dtype = np.dtype(meta["model"]["dtype"])
    described = _describe_model(meta["model"], len(meta["idx_to_word"]))
    params = {}
    for name, shape in shapes.items():
        value = members[f"param/{name}"]
        _check_array(path, f"param/{name}", value, shape, dtype, described)
        params[name] = value
    return Checkpoint(
        path=path,
        model=dict(meta["model"]),
        idx_to_word=list(meta["idx_to_word"]),
        config=dict(meta.get("config", {})),
        params=params,
        training=_read_training(path, meta, members, params),
        meta=meta,
        run_state=_read_run_state(path, meta),
    )


def resolve_checkpoint(run_or_checkpoint):
    """The checkpoint file meant by a path: the file itself, or the latest checkpoint of a run directory."""
    from captionkit.runs import RunDirectory

    path = Path(run_or_checkpoint)
    if path.is_dir():
        latest = RunDirectory(path).latest_checkpoint()
        if latest is None:
            raise CheckpointError(f"{path}: a directory with no checkpoints in {RunDirectory(path).checkpoints}")
        return latest
    return path


def load_model(run_or_checkpoint, backend=None):
    """Load a trained model from a checkpoint file or a run directory (its latest checkpoint).

    Returns ``(model, info)``: the :class:`CaptioningRNN` and a dict with ``checkpoint`` (the file read),
    ``run_dir`` (the run it belongs to, or None), ``model`` (cell_type, input_dim, wordvec_dim, hidden_dim,
    dtype), ``idx_to_word``, ``config`` (the training options: ``data`` is the dataset directory, None for the
    built-in one; ``pca``), ``epoch`` and ``iteration``. Raises :class:`CheckpointError`.
    """
    from captionkit.runs import run_dir_of

    checkpoint = read_checkpoint(resolve_checkpoint(run_or_checkpoint))
    model = checkpoint.build_model(backend)
    info = {
        "checkpoint": checkpoint.path,
        "run_dir": run_dir_of(checkpoint.path),
        "model": dict(checkpoint.model),
        "idx_to_word": list(checkpoint.idx_to_word),
        "config": dict(checkpoint.config),
        "epoch": checkpoint.epoch,
        "iteration": checkpoint.iteration,
    }
    return model, info
