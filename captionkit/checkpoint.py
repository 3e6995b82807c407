"""Checkpoints, under the names they have always had: the format (:mod:`captionkit.checkpoint_container`, the npz
container read as data only; :mod:`captionkit.checkpoint_schema`, what its members mean), finding a run's checkpoint
(:func:`captionkit.runs.resolve_checkpoint`) and loading a trained model from one (:mod:`captionkit.loading`)."""
from captionkit.checkpoint_container import CheckpointError
from captionkit.checkpoint_schema import FORMAT, FORMAT_VERSION, RUN_STATE_FIELDS, Checkpoint, read_checkpoint, \
    save_checkpoint
from captionkit.loading import build_model, load_model
from captionkit.runs import resolve_checkpoint

__all__ = ["FORMAT", "FORMAT_VERSION", "RUN_STATE_FIELDS", "Checkpoint", "CheckpointError", "build_model",
           "load_model", "read_checkpoint", "resolve_checkpoint", "save_checkpoint"]
