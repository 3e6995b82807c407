"""A training session: one stretch of training into a run directory, with the run's bookkeeping.

:class:`TrainingSession` trains from the solver's current position to the end, a stop signal or an early stop,
validating on a fixed set of images (``_Validation``), keeping the monitored score's best (``_Monitor``), saving
atomic checkpoints with the run state that carries time and monitor across resumes, and writing metrics, samples,
plots and the summary (:mod:`captionkit.runs` lists the files). SIGINT/SIGTERM stop it after the iteration in
progress (``_StopSignals``). The ranks of a distributed run other than 0 follow rank 0 (:func:`follow_root`).
What to train and from where is :mod:`captionkit.training`'s; whether a checkpoint may be resumed is
:mod:`captionkit.resume`'s.
"""
import collections
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captionkit import evaluation, metrics
from captionkit.atomicfile import atomic_write_text
from captionkit.checkpoint_schema import CheckpointError, save_checkpoint
from captionkit.data import BundleError, load_images
from captionkit.distributed import EARLY_STOP, agreed_stop
from captionkit.encoders.pipeline import copy_record
from captionkit.images import local_pictures
from captionkit.options import MONITORS, TrainConfig
from captionkit.plotting import plot_caption_grid, plot_training_curves
from captionkit.runs import run_dir_of
from captionkit.solver import TrainingDivergedError
from captionkit.spec import SpecMismatch
from captionkit.undertraining import short_run

__all__ = ["TrainResult", "TrainingSession", "follow_root"]

_STREAM_EVAL = 3  # the validation images' random stream, RandomState([seed, 3]) (captionkit.training has the others)
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
            "num_iterations": self.num_iterations, "precision": self.config.precision, "final_loss": self.final_loss,
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
        in_this_run = resumed_from is not None and run_dir_of(resumed_from) == run.root.resolve()
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
        _record_features(cfg, self.bundle, self.model.spec, run)
        self.emit({"event": "start", "run_dir": str(run.root), "iteration": solver.iteration,
                   "num_iterations": solver.num_iterations, "iterations_per_epoch": self.per_epoch,
                   "config": cfg.to_dict(),
                   "resumed_from": str(self.resumed_from) if self.resumed_from is not None else None})
        # The rule is for models that start from scratch: fine-tuning from trained weights (--init-from, SCST) is
        # often meant to be short.
        short = None if cfg.init_from is not None else \
            short_run(solver.num_iterations, self.data["train_captions"].shape[0], cfg.batch_size)
        if short is not None:
            self.emit({"event": "short_run", **short})
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
            result.samples = _write_samples(run, self.cfg, self.bundle, self.validation, self.hypotheses, self.emit)
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


def follow_root(solver, handle_signals):
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


def _record_features(cfg, bundle, spec, run):
    """Copy how the training features were made into the run (`captionkit caption` builds the same encoder); they
    must be the features of the model's ``spec``."""
    record = copy_record(bundle, cfg.pca, run.root)
    if record is not None:
        try:
            spec.fits(feature_shape=record.feature_shape, features="the features of its encoder record",
                      model="the model")
        except SpecMismatch as exc:
            raise BundleError(f"{bundle}: {exc}") from None


def _write_samples(run, cfg, bundle, validation, hypotheses, emit):
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
    pixels, drawn = None, samples
    if samples:
        pixels = load_images(bundle, "val", images)
        if pixels is None:  # a bundle of picture files (captionkit data import) lists their paths
            pixels, drawn = _sample_pictures(samples, emit)
    if pixels is not None:
        plot_caption_grid(pixels, [s["generated"] for s in drawn], [s["references"][0] for s in drawn],
                          run.samples_grid)
    return samples


def _sample_pictures(samples, emit):
    """(pictures, the samples they show) of samples whose urls are picture files, or (None, samples) when none is.

    A picture that cannot be read now (changed or replaced since the import: a decompression bomb, a decoder's own
    error) is left out of the grid with a ``sample_skipped`` event: the grid only illustrates the run, whose results
    must be written whatever its pictures have become.
    """
    if not any(Path(sample["url"]).is_file() for sample in samples):
        return None, samples  # URLs (the COCO bundle's): nothing local to draw
    pictures, drawn = [], []
    for sample in samples:
        try:
            picture, reason = local_pictures([sample["url"]]), "not a readable picture file"
        except Exception as exc:  # noqa: BLE001 -- whatever reading a picture raises must not lose the run
            picture, reason = None, f"{type(exc).__name__}: {exc}"
        if picture is None:
            emit({"event": "sample_skipped", "image": sample["image"], "url": sample["url"], "reason": reason})
        else:
            pictures.extend(picture)
            drawn.append(sample)
    return (pictures or None), drawn
