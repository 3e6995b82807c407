"""``captionkit.train``: train a captioning model end to end and leave a complete run directory behind.

One call loads a dataset (the built-in one by default, or a COCO captioning bundle), builds the model and the
solver from seeded random streams, trains with periodic validation and atomic checkpoints, and writes the files
described in :mod:`captionkit.runs`. The ``captionkit train`` command is a thin layer over it.

Reproducibility: the seed drives four independent ``RandomState`` streams (model initialisation, minibatch
sampling, the ``max_train`` subset, the validation images), and a checkpoint stores the parameters, the optimiser
state and the sampler's position, so a run that is interrupted and resumed ends with the same parameters, bit for
bit, as one that ran straight through.

Progress is reported to ``callback(event)`` with plain dicts (see :func:`train`); this module never prints.
"""
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captionkit import evaluation, metrics
from captionkit.atomicfile import atomic_write_text
from captionkit.checkpoint import CheckpointError, read_checkpoint, resolve_checkpoint, save_checkpoint
from captionkit.data import BundleError, bundle_dir, load_coco_data, load_images
from captionkit.distributed import DistributedSolver, World, agreed_stop, root_first, world
from captionkit.encoders.pipeline import copy_record
from captionkit.images import local_pictures
from captionkit.model import CaptioningRNN
from captionkit.options import RESUMABLE_OPTIONS, TrainConfig, validate_options
from captionkit.plotting import plot_caption_grid, plot_training_curves
from captionkit.runs import ConfigError, RunDirectory, new_run_dir, read_config_file, run_dir_of
from captionkit.solver import CaptioningSolver, TrainingDivergedError

__all__ = ["RESUMABLE_OPTIONS", "TrainConfig", "TrainResult", "train"]

DEFAULT_RUNS_DIR = "runs"

# Seeds of the independent random streams, as RandomState([seed, stream]).
_STREAM_BATCHES, _STREAM_SUBSET, _STREAM_EVAL = 1, 2, 3
_EVAL_BATCH = 1000  # images decoded at once during validation


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``interrupted`` is the name of the signal that stopped training early (``"SIGINT"``/``"SIGTERM"``) or None;
    ``val_metrics`` the scores of the last validation (BLEU-1..4, CIDEr-D, ROUGE-L) on ``val_images`` images;
    ``samples`` one dict per sample image (``image``, ``url``, ``generated``, ``references``).
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


class _StopRequested(Exception):
    """Raised from the solver's callback to leave the training loop after a signal."""


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
    """A fixed set of validation images with their reference captions, scored with greedy decoding."""

    def __init__(self, data, num_images, seed):
        image_idxs = data["val_image_idxs"]
        candidates = np.unique(image_idxs)
        count = min(num_images, len(candidates))
        rng = np.random.RandomState([seed, _STREAM_EVAL])
        self.images = np.sort(rng.choice(candidates, size=count, replace=False))
        self.features = data["val_features"][self.images]
        self.urls = data["val_urls"][self.images]
        self.idx_to_word = data["idx_to_word"]
        self.max_length = data["val_captions"].shape[1] - 1
        self.references = evaluation.references_by_image(data, "val", self.images)

    def run(self, model):
        """Greedy captions of every image -> (scores dict, {image index: caption})."""
        sampled = evaluation.generate_captions(model, self.features, self.max_length, batch_size=_EVAL_BATCH)
        hypotheses = {int(image): evaluation.caption_text(row, self.idx_to_word)
                      for image, row in zip(self.images, sampled)}
        return metrics.score(self.references, hypotheses), hypotheses


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


def _check_fits_checkpoint(checkpoint, data, config):
    """The dataset and model options must be those the checkpoint was trained with."""
    model = checkpoint.model
    expected = {"cell_type": config.cell, "wordvec_dim": config.wordvec_dim, "hidden_dim": config.hidden_dim,
                "dtype": config.dtype, "input_dim": data["train_features"].shape[1]}
    for key, value in expected.items():
        if model[key] != value:
            raise CheckpointError(
                f"{checkpoint.path}: the checkpoint holds a model with {key}={model[key]!r}, but this run needs "
                f"{key}={value!r}"
            )
    if list(data["idx_to_word"]) != checkpoint.idx_to_word:
        words = data["idx_to_word"]
        if len(words) != len(checkpoint.idx_to_word):
            detail = f"{len(checkpoint.idx_to_word)} words in the checkpoint, {len(words)} in the dataset"
        else:
            i = next(i for i, (a, b) in enumerate(zip(words, checkpoint.idx_to_word)) if a != b)
            detail = f"word {i} is {checkpoint.idx_to_word[i]!r} in the checkpoint but {words[i]!r} in the dataset"
        raise CheckpointError(f"{checkpoint.path}: the dataset's vocabulary differs from the checkpoint's ({detail})")


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


def _prepare_run_dir(out, resumed_from, checkpoint, config):
    """Pick the run directory and take ownership of it -> (RunDirectory, its held lock); remove what killed
    writers left half-written and, for a resumed run, the metrics recorded after its checkpoint.

    Everything that looks at the directory's content happens under the lock, so two processes started together on
    one directory cannot both pass the checks: the second is refused at once, naming the first.
    """
    source_run = run_dir_of(resumed_from) if resumed_from is not None else None
    if out is not None:
        run = RunDirectory(out)
        run.root.mkdir(parents=True, exist_ok=True)
    elif source_run is not None:
        run = RunDirectory(source_run)
    else:
        run = RunDirectory(new_run_dir(DEFAULT_RUNS_DIR, config.cell))
    lock = run.lock().acquire()
    try:
        if out is not None and (run.list_checkpoints() or run.config.exists()) and \
                (source_run is None or run.root.resolve() != source_run):
            raise ConfigError(
                f"{run.root}: already holds a run; resume it with --resume {run.root}, or choose another --out"
            )
        run.remove_partial_files()
        if checkpoint is not None:
            newer = [it for it, _ in run.list_checkpoints() if it > checkpoint.iteration]
            if newer:
                raise ConfigError(
                    f"{run.root}: has a checkpoint newer (iteration {max(newer)}) than the one resumed from "
                    f"({checkpoint.path}, iteration {checkpoint.iteration}); resume into a new directory with --out"
                )
            if source_run is not None and run.root.resolve() != source_run:
                kept = [r for r in RunDirectory(source_run).read_metrics() if r["iteration"] <= checkpoint.iteration]
                with run.open_metrics() as f:
                    f.writelines(f"{_json_line(r)}\n" for r in kept)
            else:
                run.truncate_metrics(checkpoint.iteration)
    except BaseException:
        lock.release()
        raise
    return run, lock


def _json_line(record):
    return json.dumps(record, allow_nan=False)


def _learning_rate(solver):
    first = next(iter(solver.optim_configs.values()))
    return float(first.get("learning_rate", solver.optim_config.get("learning_rate", float("nan"))))


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


def train(config=None, *, out=None, resume=None, callback=None, handle_signals=True, distributed=False, **options):
    """Train a captioning model and write a run directory; returns a :class:`TrainResult`.

    ``config``: a :class:`TrainConfig`, a mapping of its option names, or the path of a JSON/TOML config file;
    keyword ``options`` (same names) override it. ``out``: the run directory (default ``runs/<cell>-<time>``).
    ``resume``: a run directory or checkpoint to continue from; the run keeps the checkpoint's options, and only
    :data:`RESUMABLE_OPTIONS` (e.g. a larger ``epochs``) may be given differently.

    ``callback(event)`` receives dicts with an ``"event"`` key: ``"start"`` (run_dir, iteration, num_iterations,
    iterations_per_epoch, config, resumed_from), ``"iteration"`` (iteration, num_iterations, epoch, loss,
    learning_rate, elapsed, eta seconds), ``"eval"`` (iteration, epoch, metrics, images), ``"checkpoint"``
    (iteration, path), ``"interrupted"`` (signal, iteration, checkpoint) and ``"done"`` (the result's fields).

    With ``handle_signals`` (main thread only), SIGINT and SIGTERM stop training after the current iteration and
    save a checkpoint (the result has ``interrupted`` set); a second SIGINT aborts at once. A NaN or infinite loss
    or gradient raises :class:`TrainingDivergedError` naming the iteration, leaving the last good checkpoint.
    Bad data raises :class:`captionkit.data.BundleError`; bad checkpoints and options raise CheckpointError or
    ConfigError, each naming the file and value at fault.

    ``distributed``: this process is one rank of an MPI job (``mpiexec -n K``; see docs/scaling.md) that trains
    one model with :class:`captionkit.distributed.DistributedSolver`; ``batch_size`` is the global minibatch. Rank
    0 writes the run directory and reports progress; the other ranks return None.
    """
    emit = callback if callback is not None else (lambda event: None)
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

    job = world(required=True) if distributed else World(0, 1)
    with root_first(job):  # rank 0 builds the built-in dataset's cache if needed; the others then read it
        data = _subset(load_coco_data(cfg.data, pca_features=cfg.pca), cfg.max_train, cfg.seed)
    if checkpoint is not None:
        _check_fits_checkpoint(checkpoint, data, cfg)
    model = CaptioningRNN(
        data["word_to_idx"], input_dim=data["train_features"].shape[1], wordvec_dim=cfg.wordvec_dim,
        hidden_dim=cfg.hidden_dim, cell_type=cfg.cell, dtype=np.dtype(cfg.dtype).type, backend=cfg.backend,
        seed=cfg.seed,
    )
    solver = (DistributedSolver if distributed else CaptioningSolver)(
        model, data, update_rule=cfg.update_rule, optim_config={"learning_rate": cfg.lr}, lr_decay=cfg.lr_decay,
        batch_size=cfg.batch_size, num_epochs=cfg.epochs, verbose=False,
        rng=np.random.RandomState([cfg.seed, _STREAM_BATCHES]),
    )
    if checkpoint is not None:
        _check_fits_plan(checkpoint, solver)
        model.params = {name: value.copy() for name, value in checkpoint.params.items()}
        solver.load_state_dict(checkpoint.training)
    if not job.is_root:
        return _follow_root(solver, handle_signals)

    run, lock = _prepare_run_dir(out, resumed_from, checkpoint, cfg)
    with lock:  # released on any exit; the OS releases it if the process is killed
        run.write_json(run.config, cfg.to_dict())
        _record_features(cfg, data, run)
        validation = _Validation(data, cfg.eval_images, cfg.seed)
        per_epoch = solver.iterations_per_epoch
        eval_every = per_epoch if cfg.eval_every is None else cfg.eval_every
        checkpoint_every = per_epoch if cfg.checkpoint_every is None else cfg.checkpoint_every
        start_iteration = solver.iteration
        # saved_at: the iteration of the newest checkpoint in this run directory (None: none yet); checkpoint: the
        # newest good checkpoint anywhere (a run resumed into a new directory starts from another run's).
        in_this_run = resumed_from is not None and resumed_from.resolve().parent == run.checkpoints.resolve()
        state = {"checkpoint": resumed_from, "saved_at": start_iteration if in_this_run else None,
                 "evaluated_at": None, "val_metrics": {}, "hypotheses": {}}
        started = time.perf_counter()
        config_dict = cfg.to_dict()

        def save():
            path = save_checkpoint(run.checkpoint_path(solver.iteration), model, solver, config_dict)
            run.prune_checkpoints(cfg.keep_checkpoints)
            state["checkpoint"], state["saved_at"] = path, solver.iteration
            emit({"event": "checkpoint", "iteration": solver.iteration, "path": str(path)})

        def evaluate(metrics_file):
            scores, hypotheses = validation.run(model)
            state["val_metrics"], state["hypotheses"], state["evaluated_at"] = scores, hypotheses, solver.iteration
            record = {"kind": "val", "iteration": solver.iteration, "epoch": solver.epoch,
                      "images": len(validation.images), **scores}
            metrics_file.write(_json_line(record) + "\n")
            emit({"event": "eval", "iteration": solver.iteration, "epoch": solver.epoch, "metrics": scores,
                  "images": len(validation.images)})

        emit({"event": "start", "run_dir": str(run.root), "iteration": start_iteration,
              "num_iterations": solver.num_iterations, "iterations_per_epoch": per_epoch, "config": config_dict,
              "resumed_from": str(resumed_from) if resumed_from is not None else None})

        interrupted = None
        with run.open_metrics() as metrics_file, _StopSignals(handle_signals) as signals:

            def after_iteration(solver):
                it, elapsed = solver.iteration, time.perf_counter() - started
                loss = float(solver.loss_history[-1])
                record = {"kind": "train", "iteration": it, "epoch": solver.epoch, "loss": loss,
                          "learning_rate": _learning_rate(solver), "elapsed": round(elapsed, 4)}
                metrics_file.write(_json_line(record) + "\n")
                done = it - start_iteration
                emit({"event": "iteration", "iteration": it, "num_iterations": solver.num_iterations,
                      "epoch": solver.epoch, "loss": loss, "learning_rate": record["learning_rate"],
                      "elapsed": elapsed, "eta": elapsed / done * (solver.num_iterations - it)})
                if eval_every and it % eval_every == 0 and it < solver.num_iterations:
                    evaluate(metrics_file)
                if it % checkpoint_every == 0 and it < solver.num_iterations:
                    save()
                stop = agreed_stop(solver, signals.received)
                if stop is not None:
                    raise _StopRequested(stop)

            solver.callback = after_iteration
            try:
                # Overflow on the way to a NaN is reported once, by TrainingDivergedError, not as numpy warnings.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    solver.train()
            except _StopRequested as stop:
                interrupted = str(stop)
            except TrainingDivergedError as exc:
                last = state["checkpoint"]
                note = (f"The last good checkpoint is {last}." if last is not None
                        else "No checkpoint had been saved yet.")
                raise TrainingDivergedError(exc.iteration, exc.epoch, exc.quantity, exc.value, note) from None

            if solver.iteration != state["saved_at"]:
                save()
            if interrupted is None:
                if state["evaluated_at"] != solver.iteration:
                    evaluate(metrics_file)

        result = TrainResult(
            run_dir=run.root, checkpoint=Path(state["checkpoint"]), config=cfg, iteration=solver.iteration,
            num_iterations=solver.num_iterations,
            final_loss=float(solver.loss_history[-1]) if solver.loss_history else None,
            loss_history=[float(x) for x in solver.loss_history], val_metrics=state["val_metrics"],
            val_images=len(validation.images),
            elapsed=time.perf_counter() - started, interrupted=interrupted,
        )
        if interrupted is not None:
            emit({"event": "interrupted", "signal": interrupted, "iteration": solver.iteration,
                  "checkpoint": str(result.checkpoint)})
        else:
            result.samples = _write_samples(run, cfg, validation, state["hypotheses"])
        run.write_json(run.summary, _summary(result, per_epoch))
        plot_training_curves(run.read_metrics(), run.loss_plot)
        emit({"event": "done", **_summary(result, per_epoch)})
        return result


def _record_features(cfg, data, run):
    """Copy how the training features were made into the run (`captionkit caption` builds the same encoder)."""
    record = copy_record(bundle_dir(cfg.data), cfg.pca, run.root)
    if record is not None and record.feature_dim != data["train_features"].shape[1]:
        raise BundleError(f"{bundle_dir(cfg.data)}: its encoder record gives {record.feature_dim} values per picture, "
                          f"but its training features have {data['train_features'].shape[1]}")


def _write_samples(run, cfg, validation, hypotheses):
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
        pixels = load_images(cfg.data, "val", images)
        if pixels is None:  # a bundle of picture files (captionkit data import) lists their paths
            pixels = local_pictures(validation.urls[:len(samples)])
    if pixels is not None:
        plot_caption_grid(pixels, [s["generated"] for s in samples], [s["references"][0] for s in samples],
                          run.samples_grid)
    return samples


def _summary(result, per_epoch):
    losses = result.loss_history[-per_epoch:]
    return {
        "run_dir": str(result.run_dir),
        "checkpoint": str(result.checkpoint),
        "iteration": result.iteration,
        "num_iterations": result.num_iterations,
        "final_loss": result.final_loss,
        "last_epoch_mean_loss": float(np.mean(losses)) if losses else None,
        "val_metrics": result.val_metrics,
        "elapsed": round(result.elapsed, 3),
        "interrupted": result.interrupted,
    }
