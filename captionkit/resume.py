"""Resuming and starting from checkpoints: whether a checkpoint fits a run, and what a resumed run trains with.

A resumed run keeps its checkpoint's options except the resumable ones (:func:`resume_config`); a checkpoint fits
a run when its spec and vocabulary are the run's (:func:`check_fits`, the same check ``--init-from`` passes) and its
position lies within the run's iterations (:func:`check_fits_plan`); a run that is finished is reported as it is,
without writing anything (:func:`finished`, :func:`already_done`).
"""
from pathlib import Path

from captionkit.checkpoint_schema import CheckpointError, read_checkpoint
from captionkit.options import RESUMABLE_OPTIONS, TrainConfig, validate_options
from captionkit.runs import RunDirectory, read_config_file, resolve_checkpoint, run_dir_of
from captionkit.session import TrainResult
from captionkit.spec import SpecMismatch

__all__ = ["already_done", "check_fits", "check_fits_plan", "explicit_options", "finished", "initial_checkpoint",
           "resume_config"]


def explicit_options(config, options):
    """The options the caller set: from ``config`` (a TrainConfig, a mapping or a config file path) and kwargs."""
    if config is None:
        given, source = {}, "options"
    elif isinstance(config, TrainConfig):
        given, source = config.to_dict(), "config"
    elif isinstance(config, (str, Path)):
        given, source = read_config_file(config), str(config)
    else:
        given, source = dict(config), "config"
    checked = validate_options(given, source)
    checked.update(validate_options(options, "train() arguments"))
    return checked


def resume_config(checkpoint, explicit):
    """The checkpoint's config with the explicitly given resumable options applied; conflicts are errors."""
    base = TrainConfig.from_mapping(checkpoint.config, f"{checkpoint.path} (stored config)").to_dict()
    for name, value in explicit.items():
        if name not in RESUMABLE_OPTIONS and value != base[name]:
            raise CheckpointError(
                f"{checkpoint.path}: the checkpoint was made with {name}={base[name]!r}, but {name}={value!r} was "
                f"asked for. A resumed run keeps the model, data and optimiser of its checkpoint; only "
                f"{', '.join(sorted(RESUMABLE_OPTIONS))} may change. Drop the option, or start a new run."
            )
    base.update({name: value for name, value in explicit.items() if name in RESUMABLE_OPTIONS})
    return TrainConfig(**base)


def check_fits(checkpoint, spec, words, purpose):
    """The checkpoint's model must be the run's ``spec`` (its options and dataset's features) over the dataset's
    vocabulary ``words`` (to resume it, or start from it); ``purpose`` ends the message."""
    try:
        checkpoint.spec.fits(other=spec, words=words, own_words=checkpoint.idx_to_word, model="the checkpoint")
    except SpecMismatch as exc:
        raise CheckpointError(f"{checkpoint.path}: {exc}{purpose}") from None


def check_fits_plan(checkpoint, solver):
    """The checkpoint's position must lie within this run's iterations, and its epoch must follow from it."""
    per_epoch, planned = solver.iterations_per_epoch, solver.num_iterations
    if checkpoint.iteration > planned:
        raise CheckpointError(
            f"{checkpoint.path}: the checkpoint is at iteration {checkpoint.iteration}, beyond the {planned} "
            f"iterations of this run ({solver.num_epochs} epochs of {per_epoch}); resume with more --epochs"
        )
    if checkpoint.epoch != checkpoint.iteration // per_epoch:
        raise CheckpointError(
            f"{checkpoint.path}: meta 'training.epoch' is {checkpoint.epoch}, but iteration {checkpoint.iteration} "
            f"at {per_epoch} iterations per epoch is in epoch {checkpoint.iteration // per_epoch}"
        )


def initial_checkpoint(init_from):
    """The checkpoint ``--init-from`` names: a file, or a run's best checkpoint (its latest when it has no best).

    A best checkpoint that is present but unusable (corrupt, not a regular file, a dangling link) is refused rather
    than passed over for the latest: the two hold different weights, and a run quietly started from the other would
    look like the one asked for. The message names the latest for starting from it on purpose.
    """
    path = Path(init_from)
    run = RunDirectory(path)
    chosen = resolve_checkpoint(path, None)
    try:
        return read_checkpoint(chosen)
    except CheckpointError as exc:
        if chosen != run.best_checkpoint:
            raise
        latest = run.latest_checkpoint()
        instead = f"; to start from its latest checkpoint instead, pass --init-from {latest}" if latest else ""
        raise CheckpointError(f"{exc} (--init-from {path} starts from the run's best checkpoint, best.npz, which "
                              f"cannot be used{instead})") from exc


def finished(checkpoint, cfg, solver):
    """Why resuming ``checkpoint`` has nothing to do (a sentence), or None."""
    state = checkpoint.run_state
    if checkpoint.iteration >= solver.num_iterations:
        return (f"the run has trained all {solver.num_iterations} iterations of its {cfg.epochs} epochs; "
                "give a larger --epochs to train longer")
    if state.get("stopped_early") and cfg.patience is not None and state["stale"] >= cfg.patience:
        return (f"the run stopped early at iteration {checkpoint.iteration} ({state['monitor']} had not improved for "
                f"{state['stale']} validations); give a larger --patience to go on")
    return None


def already_done(checkpoint, cfg, solver, reason, emit):
    """The result of resuming a finished run, read from the run as it is: nothing is written."""
    run = RunDirectory(run_dir_of(checkpoint.path) or checkpoint.path.parent)  # a checkpoint outside a run: its folder
    summary = run.read_json(run.summary)
    state = checkpoint.run_state
    best = ({"metric": state["monitor"], "value": state["best"], "iteration": state["best_iteration"]}
            if state.get("best") is not None else None)
    history = checkpoint.training["loss_history"]
    result = TrainResult(
        run_dir=run.root, checkpoint=checkpoint.path, config=cfg, iteration=checkpoint.iteration,
        num_iterations=solver.num_iterations, final_loss=history[-1] if history else None, loss_history=history,
        val_metrics=summary.get("val_metrics", {}), val_images=summary.get("val_images", 0),
        elapsed=state.get("elapsed", 0.0), stopped_early=bool(state.get("stopped_early")), already_done=True,
        best=best, best_checkpoint=run.best_checkpoint if run.best_checkpoint.is_file() else None,
    )
    emit({"event": "already_done", "run_dir": str(run.root), "iteration": checkpoint.iteration, "reason": reason})
    return result
