"""``captionkit.train``: train a captioning model end to end and leave a complete run directory behind.

One call loads a dataset (the built-in one by default, or a captioning bundle), builds the model and the solver from
seeded random streams, and hands them to a :class:`TrainingSession`, which trains with periodic validation, atomic
checkpoints, the best checkpoint by a monitored score and optional early stopping, and writes the files described
in :mod:`captionkit.runs`. The ``captionkit train`` command is a thin layer over it.

Reproducibility: the seed drives four independent ``RandomState`` streams (model initialisation, minibatch
sampling, the ``max_train`` subset, the validation images), and a checkpoint stores the parameters, the optimiser
state, the sampler's position and the session bookkeeping (time spent, the best score and the validations since),
so a run that is interrupted and resumed ends with the same parameters, bit for bit, as one that ran straight
through. Resuming a finished run changes nothing.

Progress goes to ``callback(event)`` as plain dicts and, by default, to a :class:`captionkit.progress.
ProgressDisplay` on stderr.
"""
import collections
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captionkit import evaluation, metrics
from captionkit.atomicfile import atomic_write_text
from captionkit.checkpoint import CheckpointError, read_checkpoint, resolve_checkpoint, save_checkpoint
from captionkit.data import BundleError, bundle_dir, load_coco_data, load_images
from captionkit.distributed import EARLY_STOP, DistributedSolver, abort_on_error, agreed_stop, local_world, \
    root_first, world
from captionkit.encoders.pipeline import copy_record
from captionkit.images import local_pictures
from captionkit.model import CaptioningRNN
from captionkit.options import MONITORS, RESUMABLE_OPTIONS, TrainConfig, validate_options
from captionkit.plotting import plot_caption_grid, plot_training_curves
from captionkit.progress import ProgressDisplay
from captionkit.runs import RunDirectory, claim_run_dir, read_config_file
from captionkit.solver import CaptioningSolver, TrainingDivergedError

__all__ = ["RESUMABLE_OPTIONS", "TrainConfig", "TrainResult", "TrainingSession", "train"]

# Seeds of the independent random streams, as RandomState([seed, stream]).
_STREAM_BATCHES, _STREAM_SUBSET, _STREAM_EVAL = 1, 2, 3
_EVAL_BATCH = 1000  # images decoded at once during validation
_RATE_WINDOW = 50  # recent iterations whose median time gives the rate: one slow iteration does not move it


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``interrupted``: the signal that stopped training (``"SIGINT"``/``"SIGTERM"``) or None; ``stopped_early``:
    patience ran out; ``already_done``: the run was finished when resumed and nothing changed. ``val_metrics``: the
    last validation's scores (BLEU-1..4, CIDEr-D on the COCO toolkit's scale, ROUGE-L, loss, perplexity) on
    ``val_images`` images; ``best``: ``{"metric", "value", "iteration"}`` of the best validation, kept in
    ``best_checkpoint``. ``elapsed``: seconds of training in all sessions of the run.
    """

    run_dir: Path
    checkpoint: Path
    config: TrainConfig
    iteration: int
    num_iterations: int
    final_loss: float | None
    loss_history: list
    val_metrics: dict = field(default_factory=dict)
    val_images: int = 0
    samples: list = field(default_factory=list)
    elapsed: float = 0.0
    interrupted: str | None = None
    stopped_early: bool = False
    already_done: bool = False
    best: dict | None = None
    best_checkpoint: Path | None = None

    def summary(self, per_epoch):
        """summary.json's content."""
        losses = self.loss_history[-per_epoch:]
        return {
            "run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint), "iteration": self.iteration,
            "num_iterations": self.num_iterations, "final_loss": self.final_loss,
            "last_epoch_mean_loss": float(np.mean(losses)) if losses else None, "val_metrics": self.val_metrics,
            "val_images": self.val_images, "best": self.best,
            "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
            "elapsed": round(self.elapsed, 3), "interrupted": self.interrupted, "stopped_early": self.stopped_early,
        }


class _StopRequested(Exception):
    """Raised from the solver's callback to leave the training loop; the argument says why."""


class _StopSignals:
    """SIGINT and SIGTERM set ``received`` instead of killing the process; training stops after the iteration in
    progress and saves a checkpoint. A second SIGINT aborts at once (KeyboardInterrupt). Handlers can only be
    installed from the main thread; elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received = None
        self._previous = {}

    def __enter__(self):
        if self.enabled:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc_info):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class _Validation:
    """A fixed set of validation images with their reference captions: greedy captions scored against them, and
    the loss and perplexity of their ground-truth captions under the model."""

    def __init__(self, data, num_images, seed):
        candidates = np.unique(data["val_image_idxs"])
        count = min(num_images, len(candidates))
        rng = np.random.RandomState([seed, _STREAM_EVAL])
        self.data = data
        self.images = np.sort(rng.choice(candidates, size=count, replace=False))
        self.features = data["val_features"][self.images]
        self.urls = data["val_urls"][self.images]
        self.idx_to_word = data["idx_to_word"]
        self.max_length = data["val_captions"].shape[1] - 1
        self.references = evaluation.references_by_image(data, "val", self.images)

    def run(self, model):
        """-> (scores, {image index: caption}); scores hold the caption metrics, ``loss`` (per caption, as the
        training loss is) and ``perplexity`` (per word)."""
        sampled = evaluation.generate_captions(model, self.features, self.max_length, batch_size=_EVAL_BATCH)
        hypotheses = {int(image): evaluation.caption_text(row, self.idx_to_word)
                      for image, row in zip(self.images, sampled)}
        likelihood = evaluation.perplexity(model, self.data, "val", images=self.images)
        scores = metrics.score(self.references, hypotheses)
        scores.update(loss=likelihood["nll"] / likelihood["captions"], perplexity=likelihood["perplexity"])
        return scores, hypotheses


class _Monitor:
    """The monitored score's best value and iteration, and how many validations have passed since it improved."""

    def __init__(self, metric, state=None):
        self.metric, self.better = metric, MONITORS[metric]
        state = state or {}
        if state and state["monitor"] != metric:
            raise CheckpointError(f"the run monitored {state['monitor']!r}, not {metric!r}")
        self.best = state.get("best")
        self.best_iteration = state.get("best_iteration")
        self.stale = state.get("stale", 0)

    def update(self, scores, iteration):
        """Record a validation; True when it is the best so far."""
        value = float(scores[self.metric])
        improved = self.best is None or (value > self.best if self.better == "max" else value < self.best)
        if improved:
            self.best, self.best_iteration, self.stale = value, iteration, 0
        else:
            self.stale += 1
        return improved

    def as_dict(self):
        if self.best is None:
            return None
        return {"metric": self.metric, "value": self.best, "iteration": self.best_iteration}


class TrainingSession:
    """One session of training into a run directory this process owns: from the solver's current position to the
    end (or a signal, or an early stop), with the run's bookkeeping.

    ``bundle``: the dataset's directory (``data`` its content); ``checkpoint``: the one resumed from (its
    ``run_state`` carries time and monitor across sessions), or None.
    """

    def __init__(self, cfg, bundle, data, model, solver, run, emit, resumed_from=None, checkpoint=None):
        self.cfg, self.bundle, self.data, self.model, self.solver = cfg, Path(bundle), data, model, solver
        self.run, self.emit = run, emit
        self.resumed_from = resumed_from
        self.validation = _Validation(data, cfg.eval_images, cfg.seed)
        self.per_epoch = solver.iterations_per_epoch
        self.eval_every = self.per_epoch if cfg.eval_every is None else cfg.eval_every
        self.checkpoint_every = self.per_epoch if cfg.checkpoint_every is None else cfg.checkpoint_every
        run_state = checkpoint.run_state if checkpoint is not None else {}
        self.monitor = _Monitor(cfg.monitor, run_state)
        self.elapsed_before = run_state.get("elapsed", 0.0)
        in_this_run = resumed_from is not None and resumed_from.resolve().parent == run.checkpoints.resolve()
        self.last_checkpoint = resumed_from  # the newest good checkpoint anywhere (for the divergence message)
        self.saved_at = solver.iteration if in_this_run else None  # newest checkpoint in this run directory
        self.evaluated_at = None
        self.unsaved_validation = False  # a validation changed the bookkeeping since the last checkpoint
        self.val_metrics, self.hypotheses = {}, {}
        self.best_path = run.best_checkpoint if run.best_checkpoint.exists() and in_this_run else None
        self.stopped_early = False
        self.started = self.iteration_done = time.perf_counter()
        self.start_iteration = solver.iteration
        self.recent = collections.deque(maxlen=_RATE_WINDOW)
        self.last_eval_seconds = 0.0

    # ------------------------------------------------------------------ bookkeeping
    def elapsed(self):
        return self.elapsed_before + time.perf_counter() - self.started

    def _run_state(self):
        return {"elapsed": self.elapsed(), "monitor": self.monitor.metric, "best": self.monitor.best,
                "best_iteration": self.monitor.best_iteration, "stale": self.monitor.stale,
                "stopped_early": self.stopped_early}

    def _save(self, path=None):
        began = time.perf_counter()
        target = path or self.run.checkpoint_path(self.solver.iteration)
        save_checkpoint(target, self.model, self.solver, self.cfg.to_dict(), self._run_state())
        if path is None:
            self.run.prune_checkpoints(self.cfg.keep_checkpoints)
            self.last_checkpoint, self.saved_at = target, self.solver.iteration
            self.unsaved_validation = False
            self.emit({"event": "checkpoint", "iteration": self.solver.iteration, "path": str(target),
                       "seconds": time.perf_counter() - began})
        return target

    def _validate(self, metrics_file):
        began = time.perf_counter()
        scores, self.hypotheses = self.validation.run(self.model)
        self.val_metrics, self.evaluated_at = scores, self.solver.iteration
        improved = self.monitor.update(scores, self.solver.iteration)
        self.unsaved_validation = True
        if improved:
            self.best_path = self._save(self.run.best_checkpoint)
        self.last_eval_seconds = time.perf_counter() - began
        record = {"kind": "val", "iteration": self.solver.iteration, "epoch": self.solver.epoch,
                  "images": len(self.validation.images), "seconds": round(self.last_eval_seconds, 4), **scores}
        metrics_file.write(_json_line(record) + "\n")
        self.emit({"event": "eval", "iteration": self.solver.iteration, "epoch": self.solver.epoch, "metrics": scores,
                   "images": len(self.validation.images), "seconds": self.last_eval_seconds, "best": improved})
        if self.cfg.patience is not None and self.monitor.stale >= self.cfg.patience:
            self.stopped_early = True
            self.emit({"event": "early_stop", "iteration": self.solver.iteration, "monitor": self.monitor.metric,
                       "validations": self.monitor.stale, "best": self.monitor.best,
                       "best_iteration": self.monitor.best_iteration})

    def _eta(self, step):
        """Seconds left: the median recent iteration time for the iterations to go, plus the validations to go."""
        solver = self.solver
        left = solver.num_iterations - solver.iteration
        validations = left // self.eval_every if self.eval_every else 0
        return step * left + validations * self.last_eval_seconds

    def _after_iteration(self, metrics_file, signals):
        solver = self.solver
        now = time.perf_counter()
        self.recent.append(now - self.iteration_done)  # this iteration alone: validation and saving come below
        step = float(np.median(self.recent))
        it, loss = solver.iteration, float(solver.loss_history[-1])
        record = {"kind": "train", "iteration": it, "epoch": solver.epoch, "loss": loss,
                  "learning_rate": _learning_rate(solver), "elapsed": round(self.elapsed(), 4)}
        metrics_file.write(_json_line(record) + "\n")
        self.emit({"event": "iteration", "iteration": it, "num_iterations": solver.num_iterations,
                   "epoch": solver.epoch, "loss": loss, "learning_rate": record["learning_rate"],
                   "elapsed": self.elapsed(), "eta": self._eta(step), "iterations_per_second": 1 / max(step, 1e-9)})
        if self.eval_every and it % self.eval_every == 0 and it < solver.num_iterations:
            self._validate(metrics_file)
        if it % self.checkpoint_every == 0 and it < solver.num_iterations:
            self._save()
        stop = agreed_stop(solver, signals.received or (EARLY_STOP if self.stopped_early else None))
        self.iteration_done = time.perf_counter()
        if stop is not None:
            raise _StopRequested(stop)

    # ------------------------------------------------------------------ the session
    def train(self, handle_signals=True):
        """Train to the end (or a signal, or an early stop) -> :class:`TrainResult`."""
        cfg, solver, run = self.cfg, self.solver, self.run
        run.write_json(run.config, cfg.to_dict())
        _record_features(cfg, self.bundle, self.data, run)
        self.emit({"event": "start", "run_dir": str(run.root), "iteration": solver.iteration,
                   "num_iterations": solver.num_iterations, "iterations_per_epoch": self.per_epoch,
                   "config": cfg.to_dict(),
                   "resumed_from": str(self.resumed_from) if self.resumed_from is not None else None})
        interrupted = None
        with run.open_metrics() as metrics_file, _StopSignals(handle_signals) as signals:
            solver.callback = lambda solver: self._after_iteration(metrics_file, signals)
            try:
                # Overflow on the way to a NaN is reported once, by TrainingDivergedError, not as numpy warnings.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    solver.train()
            except _StopRequested as stop:
                interrupted = None if str(stop) == EARLY_STOP else str(stop)
                self.stopped_early = self.stopped_early or str(stop) == EARLY_STOP
            except TrainingDivergedError as exc:
                last = self.last_checkpoint
                note = (f"The last good checkpoint is {last}." if last is not None
                        else "No checkpoint had been saved yet.")
                raise TrainingDivergedError(exc.iteration, exc.epoch, exc.quantity, exc.value, note) from None
            if interrupted is None and self.evaluated_at != solver.iteration:
                self._validate(metrics_file)
            if solver.iteration != self.saved_at or self.unsaved_validation:
                self._save()  # the final state, with the bookkeeping of the last validation
        return self._finish(interrupted)

    def _finish(self, interrupted):
        solver, run = self.solver, self.run
        result = TrainResult(
            run_dir=run.root, checkpoint=Path(self.last_checkpoint), config=self.cfg, iteration=solver.iteration,
            num_iterations=solver.num_iterations,
            final_loss=float(solver.loss_history[-1]) if solver.loss_history else None,
            loss_history=[float(x) for x in solver.loss_history], val_metrics=self.val_metrics,
            val_images=len(self.validation.images), elapsed=self.elapsed(), interrupted=interrupted,
            stopped_early=self.stopped_early, best=self.monitor.as_dict(), best_checkpoint=self.best_path,
        )
        if interrupted is not None:
            self.emit({"event": "interrupted", "signal": interrupted, "iteration": solver.iteration,
                       "checkpoint": str(result.checkpoint)})
        else:
            result.samples = _write_samples(run, self.cfg, self.bundle, self.validation, self.hypotheses)
        summary = result.summary(self.per_epoch)
        run.write_json(run.summary, summary)
        plot_training_curves(run.read_metrics(), run.loss_plot)
        self.emit({"event": "done", **summary})
        return result


def _json_line(record):
    return json.dumps(record, allow_nan=False)


def _learning_rate(solver):
    first = next(iter(solver.optim_configs.values()))
    return float(first.get("learning_rate", solver.optim_config.get("learning_rate", float("nan"))))


def _subset(data, max_train, seed):
    """Keep ``max_train`` training captions drawn without replacement by a seeded stream (all when None)."""
    total = data["train_captions"].shape[0]
    if max_train is None or max_train >= total:
        return data
    rng = np.random.RandomState([seed, _STREAM_SUBSET])
    keep = np.sort(rng.choice(total, size=max_train, replace=False))
    return dict(data, train_captions=data["train_captions"][keep], train_image_idxs=data["train_image_idxs"][keep])


def _explicit_options(config, options):
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


def _resume_config(checkpoint, explicit):
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


def _check_fits(checkpoint, data, config, purpose):
    """The dataset and model options must be those of the checkpoint's model (to resume it, or start from it)."""
    model = checkpoint.model
    expected = {"cell_type": config.cell, "wordvec_dim": config.wordvec_dim, "hidden_dim": config.hidden_dim,
                "dtype": config.dtype, "input_dim": data["train_features"].shape[1]}
    for key, value in expected.items():
        if model[key] != value:
            raise CheckpointError(
                f"{checkpoint.path}: the checkpoint holds a model with {key}={model[key]!r}, but this run needs "
                f"{key}={value!r}{purpose}"
            )
    if list(data["idx_to_word"]) != checkpoint.idx_to_word:
        words = data["idx_to_word"]
        if len(words) != len(checkpoint.idx_to_word):
            detail = f"{len(checkpoint.idx_to_word)} words in the checkpoint, {len(words)} in the dataset"
        else:
            i = next(i for i, (a, b) in enumerate(zip(words, checkpoint.idx_to_word)) if a != b)
            detail = f"word {i} is {checkpoint.idx_to_word[i]!r} in the checkpoint but {words[i]!r} in the dataset"
        raise CheckpointError(f"{checkpoint.path}: the dataset's vocabulary differs from the checkpoint's "
                              f"({detail}){purpose}")


def _check_fits_plan(checkpoint, solver):
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


def _initial_checkpoint(init_from):
    """The checkpoint ``--init-from`` names: a file, or a run's best checkpoint (else its latest)."""
    path = Path(init_from)
    if path.is_dir() and RunDirectory(path).best_checkpoint.is_file():
        path = RunDirectory(path).best_checkpoint
    return read_checkpoint(resolve_checkpoint(path))


def _finished(checkpoint, cfg, solver):
    """Why resuming ``checkpoint`` has nothing to do (a sentence), or None."""
    state = checkpoint.run_state
    if checkpoint.iteration >= solver.num_iterations:
        return (f"the run has trained all {solver.num_iterations} iterations of its {cfg.epochs} epochs; "
                "give a larger --epochs to train longer")
    if state.get("stopped_early") and cfg.patience is not None and state["stale"] >= cfg.patience:
        return (f"the run stopped early at iteration {checkpoint.iteration} ({state['monitor']} had not improved for "
                f"{state['stale']} validations); give a larger --patience to go on")
    return None


def _already_done(checkpoint, cfg, solver, reason, emit):
    """The result of resuming a finished run, read from the run as it is: nothing is written."""
    run = RunDirectory(checkpoint.path.parent.parent)
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


def _follow_root(solver, handle_signals):
    """A rank other than 0 of a distributed run: take part in every step and stop when rank 0 does; rank 0 alone
    writes the run directory and reports, so this returns None."""
    with _StopSignals(handle_signals) as signals:

        def after_iteration(solver):
            if agreed_stop(solver, signals.received) is not None:
                raise _StopRequested()

        solver.callback = after_iteration
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                solver.train()
        except (_StopRequested, TrainingDivergedError):  # every rank stops together; rank 0 reports why
            pass


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
    ``"interrupted"`` (signal, iteration, checkpoint), ``"already_done"`` (run_dir, iteration, reason) and
    ``"done"`` (summary.json's fields).

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
    explicit = _explicit_options(config, options)
    checkpoint = resumed_from = None
    if resume is not None:
        resumed_from = resolve_checkpoint(resume)
        checkpoint = read_checkpoint(resumed_from)
        if checkpoint.training is None:
            raise CheckpointError(f"{resumed_from}: holds a model without training state; it cannot be resumed")
        cfg = _resume_config(checkpoint, explicit)
    else:
        cfg = TrainConfig(**explicit)

    def dataset_progress(stage, done, total):
        emit({"event": "dataset", "stage": stage, "done": done, "total": total})

    with root_first(job):  # rank 0 builds the built-in dataset's cache if needed; the others then read it
        bundle = bundle_dir(cfg.data, progress=dataset_progress)
        data = load_coco_data(bundle, pca_features=cfg.pca)
    data = _subset(data, cfg.max_train, cfg.seed)
    initial = None
    if checkpoint is not None:
        _check_fits(checkpoint, data, cfg, "")
    elif cfg.init_from is not None:
        initial = _initial_checkpoint(cfg.init_from)
        _check_fits(initial, data, cfg, f" (--init-from {cfg.init_from} starts from that model's weights: use its "
                                        "cell and sizes and a dataset with its vocabulary)")
    model = CaptioningRNN(
        data["word_to_idx"], input_dim=data["train_features"].shape[1], wordvec_dim=cfg.wordvec_dim,
        hidden_dim=cfg.hidden_dim, cell_type=cfg.cell, dtype=np.dtype(cfg.dtype).type, backend=cfg.backend,
        seed=cfg.seed,
    )
    solver = (DistributedSolver if job.comm is not None else CaptioningSolver)(
        model, data, update_rule=cfg.update_rule, optim_config={"learning_rate": cfg.lr}, lr_decay=cfg.lr_decay,
        batch_size=cfg.batch_size, num_epochs=cfg.epochs, verbose=False,
        rng=np.random.RandomState([cfg.seed, _STREAM_BATCHES]),
    )
    if checkpoint is not None:
        _check_fits_plan(checkpoint, solver)
        model.params = {name: value.copy() for name, value in checkpoint.params.items()}
        solver.load_state_dict(checkpoint.training)
    elif initial is not None:
        model.params = {name: value.copy() for name, value in initial.params.items()}
    if not job.is_root:
        return _follow_root(solver, handle_signals)
    if checkpoint is not None:
        reason = _finished(checkpoint, cfg, solver)
        if reason is not None:
            return _already_done(checkpoint, cfg, solver, reason, emit)

    run, lock = claim_run_dir(out, resumed_from, checkpoint.iteration if checkpoint else None, cfg.cell)
    with lock:  # released on any exit; the OS releases it if the process is killed
        session = TrainingSession(cfg, bundle, data, model, solver, run, emit, resumed_from, checkpoint)
        return session.train(handle_signals)


def _record_features(cfg, bundle, data, run):
    """Copy how the training features were made into the run (`captionkit caption` builds the same encoder)."""
    record = copy_record(bundle, cfg.pca, run.root)
    if record is not None and record.feature_dim != data["train_features"].shape[1]:
        raise BundleError(f"{bundle}: its encoder record gives {record.feature_dim} values per picture, "
                          f"but its training features have {data['train_features'].shape[1]}")


def _write_samples(run, cfg, bundle, validation, hypotheses):
    """samples.txt (and samples.png when the dataset has images) for the first ``num_samples`` validation images."""
    images = validation.images[:cfg.num_samples]
    samples = [
        {"image": int(i), "url": str(url), "generated": hypotheses[int(i)],
         "references": validation.references[int(i)]}
        for i, url in zip(images, validation.urls)
    ]
    lines = []
    for sample in samples:
        lines.append(f"val image {sample['image']}  {sample['url']}")
        lines.append(f"  generated: {sample['generated']}")
        for k, reference in enumerate(sample["references"]):
            lines.append(f"  {'truth:' if k == 0 else '':<10} {reference}")
        lines.append("")
    atomic_write_text(run.samples_text, "\n".join(lines))
    pixels = None
    if samples:
        pixels = load_images(bundle, "val", images)
        if pixels is None:  # a bundle of picture files (captionkit data import) lists their paths
            pixels = local_pictures(validation.urls[:len(samples)])
    if pixels is not None:
        plot_caption_grid(pixels, [s["generated"] for s in samples], [s["references"][0] for s in samples],
                          run.samples_grid)
    return samples
