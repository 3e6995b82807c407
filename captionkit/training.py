"""``captionkit.train``: train a captioning model end to end and leave a complete run directory behind.

One call loads a dataset (the built-in one by default, or a captioning bundle), builds the model and the solver from
seeded random streams, and hands them to a :class:`captionkit.session.TrainingSession`, which trains with periodic
validation, atomic checkpoints, the best checkpoint by a monitored score and optional early stopping, and writes the
files described in :mod:`captionkit.runs`. Whether a checkpoint may be resumed or started from is
:mod:`captionkit.resume`'s. The ``captionkit train`` command is a thin layer over it.

Reproducibility: the seed drives four independent ``RandomState`` streams (model initialisation, minibatch
sampling, the ``max_train`` subset, the validation images), and a checkpoint stores the parameters, the optimiser
state, the sampler's position and the session bookkeeping (time spent, the best score and the validations since),
so a run that is interrupted and resumed ends with the same parameters, bit for bit, as one that ran straight
through. Resuming a finished run changes nothing.

Progress goes to ``callback(event)`` as plain dicts and, by default, to a :class:`captionkit.progress.
ProgressDisplay` on stderr.
"""
import sys

import numpy as np

from captionkit import resume as resuming
from captionkit.checkpoint_schema import CheckpointError, read_checkpoint
from captionkit.data import bundle_dir, load_coco_data
from captionkit.distributed import DistributedSolver, abort_on_error, local_world, root_first, world
from captionkit.loading import new_model
from captionkit.options import RESUMABLE_OPTIONS, TrainConfig
from captionkit.progress import ProgressDisplay
from captionkit.runs import ConfigError, claim_run_dir, resolve_checkpoint
from captionkit.scst import SelfCriticalSolver
from captionkit.session import TrainingSession, TrainResult, follow_root
from captionkit.solver import CaptioningSolver
from captionkit.spec import ModelSpec

__all__ = ["RESUMABLE_OPTIONS", "TrainConfig", "TrainResult", "TrainingSession", "train"]

# Seeds of the independent random streams, as RandomState([seed, stream]); the validation images' is stream 3
# (captionkit.session).
_STREAM_BATCHES, _STREAM_SUBSET = 1, 2


def _run_spec(cfg, data):
    """The :class:`ModelSpec` a run of options ``cfg`` trains on ``data`` (its features' shape and vocabulary)."""
    feature_shape = data["train_features"].shape[1:]
    if cfg.attention is not None and len(feature_shape) != 2:
        raise ValueError(f"--attention {cfg.attention} reads a grid of image regions, but the dataset's features are "
                         f"one vector of {feature_shape[-1]} values per image: train on a bundle of grid features")
    return ModelSpec(cell_type=cfg.cell, feature_shape=feature_shape, wordvec_dim=cfg.wordvec_dim,
                     hidden_dim=cfg.hidden_dim, vocab_size=len(data["idx_to_word"]), dtype=cfg.dtype,
                     attention=cfg.attention, attention_dim=cfg.attention_dim)


def _emitter(callback, progress):
    """One callable for the session's events: the caller's callback, and the progress display unless off."""
    targets = [t for t in (callback, ProgressDisplay() if progress else None) if t is not None]

    def emit(event):
        for target in targets:
            target(event)
    return emit


def train(config=None, *, out=None, resume=None, callback=None, progress=True, handle_signals=True,
          distributed=False, **options):
    """Train a captioning model and write a run directory; returns a :class:`TrainResult`.

    ``config``: a :class:`TrainConfig`, a mapping of its option names, or the path of a JSON/TOML config file;
    keyword ``options`` (same names, :data:`captionkit.options.OPTIONS`) override it. ``out``: the run directory
    (default ``runs/<cell>-<time>``). ``resume``: a run directory or checkpoint to continue from; the run keeps the
    checkpoint's options, and only :data:`RESUMABLE_OPTIONS` (e.g. a larger ``epochs``) may be given differently;
    a run that is finished (all its epochs, or stopped early with the same patience) is left as it is
    (``already_done``). ``init_from`` (an option) starts a new run from another run's weights.

    ``progress``: show the run's progress on stderr (:class:`captionkit.progress.ProgressDisplay`; in a notebook
    too). ``callback(event)`` receives dicts with an ``"event"`` key: ``"dataset"`` (stage, done, total: the
    built-in dataset's first build), ``"start"`` (run_dir, iteration, num_iterations, iterations_per_epoch,
    config, resumed_from), ``"iteration"`` (iteration, num_iterations, epoch, loss, learning_rate, elapsed, eta,
    iterations_per_second), ``"eval"`` (iteration, epoch, metrics, images, seconds, best), ``"checkpoint"``
    (iteration, path, seconds), ``"early_stop"`` (iteration, monitor, validations, best, best_iteration),
    ``"interrupted"`` (signal, iteration, checkpoint), ``"already_done"`` (run_dir, iteration, reason),
    ``"sample_skipped"`` (image, url, reason: a sample picture left out of samples.png) and ``"done"`` (summary.json's
    fields). Right after ``"start"``, ``"short_run"`` (:func:`captionkit.undertraining.short_run`'s fields) says
    that the run is planned too short to learn much.

    With ``handle_signals`` (main thread only), SIGINT and SIGTERM stop training after the current iteration and
    save a checkpoint (the result has ``interrupted`` set); a second SIGINT aborts at once. A NaN or infinite loss
    or gradient raises :class:`TrainingDivergedError` naming the iteration, leaving the last good checkpoint.
    Bad data raises :class:`captionkit.data.BundleError`; bad checkpoints and options raise CheckpointError or
    ConfigError, each naming the file and value at fault; a directory another process is training into raises
    :class:`captionkit.locking.LockHeldError` naming it.

    ``distributed``: this process is one rank of an MPI job (``mpiexec -n K``; see docs/scaling.md) that trains
    one model with :class:`captionkit.distributed.DistributedSolver`; ``batch_size`` is the global minibatch. Rank
    0 writes the run directory and reports progress; the other ranks return None.
    """
    job = world(required=True) if distributed else local_world()
    emit = _emitter(callback, progress and job.is_root)
    # A rank that fails must end the whole job, or the others would wait for it forever.
    with abort_on_error(job, lambda message: print(f"Error: {message}", file=sys.stderr, flush=True)):
        return _train(job, config, out, resume, emit, handle_signals, options)


def _train(job, config, out, resume, emit, handle_signals, options):
    explicit = resuming.explicit_options(config, options)
    checkpoint = resumed_from = None
    if resume is not None:
        resumed_from = resolve_checkpoint(resume)
        checkpoint = read_checkpoint(resumed_from)
        if checkpoint.training is None:
            raise CheckpointError(f"{resumed_from}: holds a model without training state; it cannot be resumed")
        cfg = resuming.resume_config(checkpoint, explicit)
    else:
        cfg = TrainConfig(**explicit)

    def dataset_progress(stage, done, total):
        emit({"event": "dataset", "stage": stage, "done": done, "total": total})

    with root_first(job):  # rank 0 builds the built-in dataset's cache if needed; the others then read it
        bundle = bundle_dir(cfg.data, progress=dataset_progress)
        data = load_coco_data(bundle, pca_features=cfg.pca)
    data = _subset(data, cfg.max_train, cfg.seed)
    spec = _run_spec(cfg, data)
    initial = None
    if checkpoint is not None:
        resuming.check_fits(checkpoint, spec, data["idx_to_word"], "")
    elif cfg.init_from is not None:
        initial = resuming.initial_checkpoint(cfg.init_from)
        resuming.check_fits(initial, spec, data["idx_to_word"],
                            f" (--init-from {cfg.init_from} starts from that model's weights: use its cell and sizes "
                            "and a dataset with its vocabulary)")
    model = new_model(spec, data["word_to_idx"], backend=cfg.backend, seed=cfg.seed,
                      attention_penalty=cfg.attention_penalty, precision=cfg.precision)
    solver_args = dict(update_rule=cfg.update_rule, optim_config={"learning_rate": cfg.lr}, lr_decay=cfg.lr_decay,
                       batch_size=cfg.batch_size, num_epochs=cfg.epochs, verbose=False,
                       rng=np.random.RandomState([cfg.seed, _STREAM_BATCHES]))
    if cfg.objective == "scst":
        _check_scst(cfg, job)
        solver = SelfCriticalSolver(model, data, samples=cfg.scst_samples, baseline=cfg.scst_baseline, seed=cfg.seed,
                                    **solver_args)
    else:
        solver = (DistributedSolver if job.comm is not None else CaptioningSolver)(model, data, **solver_args)
    if checkpoint is not None:
        resuming.check_fits_plan(checkpoint, solver)
        model.params = {name: value.copy() for name, value in checkpoint.params.items()}
        solver.load_state_dict(checkpoint.training)
    elif initial is not None:
        model.params = {name: value.copy() for name, value in initial.params.items()}
    if not job.is_root:
        return follow_root(solver, handle_signals)
    if checkpoint is not None:
        reason = resuming.finished(checkpoint, cfg, solver)
        if reason is not None:
            return resuming.already_done(checkpoint, cfg, solver, reason, emit)

    run, lock = claim_run_dir(out, resumed_from, checkpoint.iteration if checkpoint else None, cfg.cell)
    with lock:  # released on any exit; the OS releases it if the process is killed
        session = TrainingSession(cfg, bundle, data, model, solver, run, emit, resumed_from, checkpoint)
        return session.train(handle_signals)


def _check_scst(cfg, job):
    """ConfigError for SCST options that cannot go together (each option alone is checked by its table entry)."""
    if job.comm is not None:
        raise ConfigError("--objective scst runs in one process; it is not distributed yet")
    if cfg.scst_baseline == "mean" and cfg.scst_samples < 2:
        raise ConfigError(f"--scst-baseline mean needs --scst-samples of at least 2, got {cfg.scst_samples}")


def _subset(data, max_train, seed):
    """Keep ``max_train`` training captions drawn without replacement by a seeded stream (all when None)."""
    total = data["train_captions"].shape[0]
    if max_train is None or max_train >= total:
        return data
    rng = np.random.RandomState([seed, _STREAM_SUBSET])
    keep = np.sort(rng.choice(total, size=max_train, replace=False))
    return dict(data, train_captions=data["train_captions"][keep], train_image_idxs=data["train_image_idxs"][keep])
