"""Trained models from checkpoints: where the checkpoint format (which knows a model only by its spec) meets the
model. :func:`load_model` takes a checkpoint file or a run directory (its latest checkpoint)."""
from captionkit.checkpoint_schema import CheckpointError, read_checkpoint
from captionkit.model import CaptioningRNN
from captionkit.plugins import PluginLoadError, UnknownPluginError
from captionkit.runs import resolve_checkpoint, run_dir_of

__all__ = ["build_model", "load_model", "new_model"]


def new_model(spec, word_to_idx, backend=None, seed=None, attention_penalty=1.0):
    """A freshly initialised :class:`CaptioningRNN` of ``spec`` (a :class:`captionkit.spec.ModelSpec`) over the
    vocabulary ``word_to_idx``; ``attention_penalty`` is the training option of an attention model's loss."""
    regions = spec.feature_shape[0] if len(spec.feature_shape) == 2 else None
    return CaptioningRNN(word_to_idx, input_dim=spec.feature_dim, wordvec_dim=spec.wordvec_dim,
                         hidden_dim=spec.hidden_dim, cell_type=spec.cell_type, dtype=spec.numpy_dtype,
                         backend=backend, seed=seed, regions=regions, attention=spec.attention,
                         attention_dim=spec.attention_dim, attention_penalty=attention_penalty)


def build_model(checkpoint, backend=None):
    """A :class:`CaptioningRNN` with ``checkpoint``'s (a :class:`captionkit.checkpoint_schema.Checkpoint`) cell,
    dimensions, vocabulary and parameters; CheckpointError when its cell or attention cannot be loaded."""
    try:
        model = new_model(checkpoint.spec, checkpoint.word_to_idx, backend, seed=0)
    except (UnknownPluginError, PluginLoadError) as exc:  # its cell's or its attention's
        raise CheckpointError(f"{checkpoint.path}: the checkpoint was made with {checkpoint.spec.plugins()}: {exc}") from exc
    model.params = {name: value.copy() for name, value in checkpoint.params.items()}
    return model


def load_model(run_or_checkpoint, backend=None):
    """Load a trained model from a checkpoint file or a run directory (its latest checkpoint).

    Returns ``(model, info)``: the :class:`CaptioningRNN` and a dict with ``checkpoint`` (the file read),
    ``run_dir`` (the run it belongs to, or None), ``model`` (cell_type, input_dim, wordvec_dim, hidden_dim,
    dtype), ``idx_to_word``, ``config`` (the training options: ``data`` is the dataset directory, None for the
    built-in one; ``pca``), ``epoch`` and ``iteration``. Raises :class:`CheckpointError`.
    """
    checkpoint = read_checkpoint(resolve_checkpoint(run_or_checkpoint))
    model = build_model(checkpoint, backend)
    info = {
        "checkpoint": checkpoint.path,
        "run_dir": run_dir_of(checkpoint.path),
        "model": checkpoint.model,
        "idx_to_word": list(checkpoint.idx_to_word),
        "config": dict(checkpoint.config),
        "epoch": checkpoint.epoch,
        "iteration": checkpoint.iteration,
    }
    return model, info
