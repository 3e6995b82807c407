"""Trained models from checkpoints: where the checkpoint format (which knows a model only by its spec) meets the
model. :func:`load_model` takes a checkpoint file or a run directory (its best checkpoint when it has one, else its
latest; :func:`captionkit.runs.resolve_checkpoint` decides), and :func:`describe_checkpoint` says which was loaded."""
from captionkit.checkpoint_schema import CheckpointError, read_checkpoint
from captionkit.model import CaptioningRNN
from captionkit.plugins import PluginLoadError, UnknownPluginError
from captionkit.runs import RunDirectory, resolve_checkpoint, run_dir_of

__all__ = ["build_model", "describe_checkpoint", "load_model", "new_model"]


def new_model(spec, word_to_idx, backend=None, seed=None, attention_penalty=1.0, precision="fp32"):
    """A freshly initialised :class:`CaptioningRNN` of ``spec`` (a :class:`captionkit.spec.ModelSpec`) over the
    vocabulary ``word_to_idx``; ``attention_penalty`` is the training option of an attention model's loss,
    ``precision`` how its products run."""
    regions = spec.feature_shape[0] if len(spec.feature_shape) == 2 else None
    return CaptioningRNN(word_to_idx, input_dim=spec.feature_dim, wordvec_dim=spec.wordvec_dim,
                         hidden_dim=spec.hidden_dim, cell_type=spec.cell_type, dtype=spec.numpy_dtype,
                         backend=backend, seed=seed, regions=regions, attention=spec.attention,
                         attention_dim=spec.attention_dim, attention_penalty=attention_penalty, precision=precision)


def build_model(checkpoint, backend=None, precision=None):
    """A :class:`CaptioningRNN` with ``checkpoint``'s (a :class:`captionkit.checkpoint_schema.Checkpoint`) cell,
    dimensions, vocabulary and parameters, its products at ``precision`` (None: the checkpoint's); CheckpointError
    when its cell or attention cannot be loaded."""
    precision = checkpoint.precision if precision is None else precision
    try:
        model = new_model(checkpoint.spec, checkpoint.word_to_idx, backend, seed=0, precision=precision)
    except (UnknownPluginError, PluginLoadError) as exc:  # its cell's or its attention's
        raise CheckpointError(f"{checkpoint.path}: the checkpoint was made with {checkpoint.spec.plugins()}: {exc}") from exc
    model.params = {name: value.copy() for name, value in checkpoint.params.items()}
    return model


def load_model(run_or_checkpoint, backend=None, checkpoint=None, precision=None):
    """Load a trained model from a checkpoint file or a run directory.

    ``checkpoint`` chooses among a run directory's checkpoints (:func:`captionkit.runs.resolve_checkpoint`): None
    (the default) is its best checkpoint, ``best.npz``, when it has one, else its latest; ``"best"``, ``"latest"``,
    or one of its checkpoint files. ``precision``: how the model's products run (None: as the checkpoint was
    trained, "fp32" for a checkpoint from before precisions existed; :data:`captionkit.precision.PRECISIONS`).

    Returns ``(model, info)``: the :class:`CaptioningRNN` and a dict with ``checkpoint`` (the file read),
    ``run_dir`` (the run it belongs to, or None), ``model`` (cell_type, input_dim, wordvec_dim, hidden_dim,
    dtype), ``precision`` (the model's), ``idx_to_word``, ``config`` (the training options: ``data`` is the dataset
    directory, None for the built-in one; ``pca``), ``epoch``, ``iteration`` and ``run_state`` (the run's
    bookkeeping when the checkpoint was saved: ``monitor``, ``best``, ``best_iteration``, ...; empty for a
    model-only checkpoint). Raises :class:`CheckpointError`.
    """
    path = resolve_checkpoint(run_or_checkpoint, checkpoint)
    try:
        loaded = read_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{_instead(run_or_checkpoint, path)}") from exc
    model = build_model(loaded, backend, precision)
    info = {
        "checkpoint": loaded.path,
        "run_dir": run_dir_of(loaded.path),
        "model": loaded.model,
        "precision": model.precision,
        "idx_to_word": list(loaded.idx_to_word),
        "config": dict(loaded.config),
        "epoch": loaded.epoch,
        "iteration": loaded.iteration,
        "run_state": dict(loaded.run_state),
    }
    return model, info


def _instead(run_or_checkpoint, path):
    """For an unusable best.npz chosen by default: how to use the run's latest checkpoint instead."""
    run = RunDirectory(run_or_checkpoint)
    latest = run.latest_checkpoint() if path == run.best_checkpoint else None
    return f" (the run's best checkpoint; to use its latest, {latest.name}, choose checkpoint 'latest')" if latest \
        else ""


def describe_checkpoint(info):
    """Which checkpoint :func:`load_model` read, in words, from its ``info``: ``RUN/checkpoints/best.npz (best val
    CIDEr-D 3.3312 at iteration 2800)``, ``... (latest, iteration 3000; the run has no best checkpoint)``."""
    path, state = info["checkpoint"], info["run_state"]
    run = RunDirectory(info["run_dir"]) if info["run_dir"] is not None else None
    if run is not None and path.resolve() == run.best_checkpoint.resolve() and state.get("best") is not None:
        return (f"{path} (best val {state['monitor']} {state['best']:.4f} at iteration "
                f"{state['best_iteration']})")
    if run is None:
        return f"{path} (iteration {info['iteration']})"
    latest = run.latest_checkpoint()
    which = "latest, " if latest is not None and path.resolve() == latest.resolve() else ""
    no_best = "" if run.best_checkpoint.is_file() else "; the run has no best checkpoint"
    return f"{path} ({which}iteration {info['iteration']}{no_best})"
