"""Run directories, per-iteration metrics (JSON lines) and config files.

A training run leaves everything in one directory::

    RUN/
      config.json        the resolved training options (usable again with `captionkit train --config`)
      metrics.jsonl      one JSON object per line: {"kind": "train", "iteration", "epoch", "loss", "learning_rate",
                         "elapsed"} per iteration and {"kind": "val", "iteration", "epoch", "images", metric: value}
                         per evaluation
      checkpoints/       ckpt-00000120.npz ... (the iteration after which each was saved; see captionkit.checkpoint),
                         and best.npz: the checkpoint of the best validation by the monitored score
      loss.png           training loss and validation metrics against iterations
      samples.txt        generated and ground-truth captions of validation images
      samples.png        the same as a picture grid, when the dataset has images
      .lock              held by the process writing the run (captionkit.locking), released when it exits
      summary.json       final loss, validation metrics, precision, time, iterations
      encoder.json       how the training features were made (copied from the dataset, when it records it), and
      pca.h5             the PCA that reduced them, if any: `captionkit caption` gives new pictures the same features

Config files are data: JSON (``.json``) or TOML (``.toml``, read with tomllib); nothing in them is evaluated.
"""
import json
import math
import os
import re
import time
from pathlib import Path

from captionkit.checkpoint_container import CheckpointError
from captionkit.locking import DirectoryLock
from captionkit.safeio import TEMPORARY_NAME, atomic_write_text, parse_json, read_bounded, read_json, read_lines

__all__ = ["DEFAULT_RUNS_DIR", "ConfigError", "RunDirectory", "claim_run_dir", "new_run_dir", "read_config_file",
           "resolve_checkpoint", "run_dir_of"]

DEFAULT_RUNS_DIR = "runs"

_CHECKPOINT_NAME = re.compile(r"^ckpt-(\d{8,})\.npz$")
LOCK_FILE = ".lock"
_MAX_CONFIG_BYTES = 2**20  # config files are a few hundred bytes
_MAX_RUN_RECORD_BYTES = 16 * 2**20  # config.json and summary.json hold options and a few results: a few KB
# A record is about 150 bytes: 256 MiB is over a million iterations, whose records fit in memory.
MAX_METRICS_BYTES = 256 * 2**20
_MAX_METRICS_LINE = 2**16


class ConfigError(ValueError):
    """A config file cannot be read, or holds an unknown option or a value of the wrong kind."""


class RunDirectory:
    """The files of one run under ``root`` (nothing is created until something is written)."""

    def __init__(self, root):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.metrics = self.root / "metrics.jsonl"
        self.checkpoints = self.root / "checkpoints"
        self.best_checkpoint = self.checkpoints / "best.npz"
        self.loss_plot = self.root / "loss.png"
        self.samples_text = self.root / "samples.txt"
        self.samples_grid = self.root / "samples.png"
        self.summary = self.root / "summary.json"

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, iteration):
        """Where the checkpoint saved after ``iteration`` iterations goes."""
        return self.checkpoints / f"ckpt-{iteration:08d}.npz"

    def list_checkpoints(self):
        """``[(iteration, path), ...]`` of the checkpoint files present, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for path in self.checkpoints.iterdir():
            match = _CHECKPOINT_NAME.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest_checkpoint(self):
        """Path of the checkpoint with the highest iteration, or None."""
        found = self.list_checkpoints()
        return found[-1][1] if found else None

    def remove_partial_files(self):
        """Delete the temporary files of writes that a killed process never finished (checkpoints, config,
        summary, pictures: :func:`captionkit.safeio.temporary_path` names them ``.NAME.PID-XXXXXXXX.tmp``). Call it
        only while owning the run (:meth:`lock`): another writer's file in progress would go too."""
        for folder in (self.root, self.checkpoints):
            if folder.is_dir():
                for path in folder.iterdir():
                    if TEMPORARY_NAME.match(path.name) and path.is_file():
                        path.unlink(missing_ok=True)

    def lock(self):
        """The run's ownership lock (:class:`captionkit.locking.DirectoryLock` on ``RUN/.lock``): one process at
        a time writes a run; readers take no lock."""
        return DirectoryLock(self.root, LOCK_FILE, what="run")

    def prune_checkpoints(self, keep):
        """Delete all but the ``keep`` most recent checkpoints."""
        for _, path in self.list_checkpoints()[:-keep]:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ config and summary
    def write_json(self, path, obj):
        atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self, path):
        """The JSON object in ``path`` (config.json, summary.json), or {} when it is missing or unreadable."""
        try:
            value = read_json(path, _MAX_RUN_RECORD_BYTES, "run record")
        except ValueError:  # a FIFO, an oversized or broken file reads as missing, as a crash mid-write would
            return {}
        return value if isinstance(value, dict) else {}

    # ------------------------------------------------------------------ metrics
    def read_metrics(self):
        """The usable records of ``metrics.jsonl`` in order (:meth:`read_metrics_counted` without the count)."""
        return self.read_metrics_counted()[0]

    def read_metrics_counted(self):
        """``(records, skipped)``: the usable records of ``metrics.jsonl`` in order, and how many lines were not.

        A usable record is a JSON object with a ``kind`` ("train" or "val"), an integer ``iteration`` and finite
        numbers for every other value, as training writes them; anything else (a line cut short by a crash, bad
        UTF-8, NaN, a string or a list where a number belongs, nesting too deep to parse, a line of more than 64 KiB)
        is skipped and counted.
        A metrics file that is not a regular file or is larger than :data:`MAX_METRICS_BYTES` is refused with a
        ValueError naming it.
        """
        if not os.path.lexists(self.metrics):
            return [], 0
        records, skipped = [], 0
        for _, line in read_lines(self.metrics, MAX_METRICS_BYTES, _MAX_METRICS_LINE, "metrics file"):
            if line is None:  # longer than any record training writes
                skipped += 1
                continue
            try:
                record = parse_json(line, self.metrics, "metrics record")
            except ValueError:
                skipped += line.strip() != b""
                continue
            if _usable_record(record):
                records.append(record)
            else:
                skipped += 1
        return records, skipped

    def truncate_metrics(self, iteration, source=None):
        """Keep only the records up to ``iteration`` of ``source``'s metrics (default this run's own): a resumed run
        rewrites what came after its checkpoint, and one resumed into a new directory starts from its source's."""
        kept = [r for r in (source or self).read_metrics() if r["iteration"] <= iteration]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def open_metrics(self):
        """The metrics file opened for appending, line-buffered so each record reaches the OS when written."""
        self.root.mkdir(parents=True, exist_ok=True)
        return open(self.metrics, "a", encoding="utf-8", buffering=1)


def _usable_record(record):
    return (isinstance(record, dict) and record.get("kind") in ("train", "val")
            and type(record.get("iteration")) is int
            and all(key in ("kind", "iteration") or (type(value) in (int, float) and math.isfinite(value))
                    for key, value in record.items()))


def claim_run_dir(out, resumed_from=None, checkpoint_iteration=None, cell="run", runs_dir=DEFAULT_RUNS_DIR):
    """The directory a training session writes -> (RunDirectory, its held lock).

    ``out`` (created if needed), else the run ``resumed_from`` (a checkpoint path) belongs to, else a new
    ``runs_dir/<cell>-<time>``. Ownership comes first (:meth:`RunDirectory.lock`) and everything that looks at the
    directory's content happens under it, so two processes started together on one directory cannot both pass the
    checks: the second is refused at once, naming the first. Then what killed writers left half-written goes, and
    for a resumed run the metrics recorded after its checkpoint (iteration ``checkpoint_iteration``).
    """
    source_run = run_dir_of(resumed_from) if resumed_from is not None else None
    if out is not None:
        run = RunDirectory(out)
        run.root.mkdir(parents=True, exist_ok=True)
    elif source_run is not None:
        run = RunDirectory(source_run)
    else:
        run = RunDirectory(new_run_dir(runs_dir, cell))
    lock = run.lock().acquire()
    try:
        into_source = source_run is not None and run.root.resolve() == source_run
        if out is not None and not into_source and (run.list_checkpoints() or run.config.exists()):
            raise ConfigError(
                f"{run.root}: already holds a run; resume it with --resume {run.root}, or choose another --out"
            )
        run.remove_partial_files()
        if resumed_from is not None:
            newer = [it for it, _ in run.list_checkpoints() if it > checkpoint_iteration]
            if newer:
                raise ConfigError(
                    f"{run.root}: has a checkpoint newer (iteration {max(newer)}) than the one resumed from "
                    f"({resumed_from}, iteration {checkpoint_iteration}); resume into a new directory with --out"
                )
            elsewhere = source_run is not None and not into_source
            run.truncate_metrics(checkpoint_iteration, RunDirectory(source_run) if elsewhere else None)
    except BaseException:
        lock.release()
        raise
    return run, lock


def run_dir_of(checkpoint_path):
    """The run directory that holds ``checkpoint_path`` (RUN/checkpoints/*.npz beside RUN/config.json), resolved,
    or None: the one answer to "which run is this checkpoint from"."""
    path = Path(checkpoint_path).resolve()
    root = path.parent.parent
    if path.parent == RunDirectory(root).checkpoints and RunDirectory(root).config.is_file():
        return root
    return None


def resolve_checkpoint(run_or_checkpoint, choice="latest"):
    """The checkpoint file meant by a path and a choice -> Path; CheckpointError naming what is missing.

    ``run_or_checkpoint`` is a run directory or a checkpoint file. For a run directory, ``choice`` is ``"latest"``
    (the highest iteration: what ``--resume`` continues), ``"best"`` (``best.npz``), None (``best.npz`` when the run
    has one, else the latest: what RUN means to caption, sample and evaluate, as Lightning's ``ckpt_path="best"``)
    or a checkpoint file of that run (a path, or a bare name looked up in its checkpoints folder). A checkpoint file
    is its own answer when ``choice`` is None or ``"latest"``; "best" or another file beside it is refused, as a
    second answer to one question.

    A ``best.npz`` that is present but unusable (corrupt, a dangling link) is still the answer for None: its reader
    refuses it, rather than the latest, whose weights differ, being used in its place without a word.
    """
    path = Path(run_or_checkpoint)
    if not path.is_dir():
        if choice not in (None, "latest"):
            raise CheckpointError(f"{path}: a checkpoint file; checkpoint {choice!r} chooses among the checkpoints of "
                                  "a run directory, so give the run directory instead")
        return path
    run = RunDirectory(path)
    if choice is None:
        choice = "best" if os.path.lexists(run.best_checkpoint) else "latest"
    if choice == "best":
        if not os.path.lexists(run.best_checkpoint):
            raise CheckpointError(f"{path}: has no best checkpoint ({run.best_checkpoint} is written at the run's "
                                  "first validation); choose checkpoint 'latest'")
        return run.best_checkpoint
    if choice == "latest":
        latest = run.latest_checkpoint()
        if latest is None:
            raise CheckpointError(f"{path}: a directory with no checkpoints in {run.checkpoints}")
        return latest
    return _checkpoint_of_run(run, choice)


def _checkpoint_of_run(run, name):
    """The checkpoint file ``name`` (a path, or a bare name in ``run.checkpoints``) of ``run``."""
    given = Path(name)
    candidates = [given] if given.name != name or given.exists() else [given, run.checkpoints / name]
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is None:
        looked = " nor ".join(str(candidate) for candidate in candidates)
        raise CheckpointError(f"checkpoint {name!r}: not 'best', 'latest' or a checkpoint file (no file {looked})")
    if run_dir_of(found) != run.root.resolve():
        raise CheckpointError(f"{found}: not a checkpoint of {run.root} (not in {run.checkpoints}); give it in "
                              "place of the run directory to use it")
    return found


def new_run_dir(base, cell):
    """Create and return a fresh ``base/<cell>-<YYYYmmdd-HHMMSS>`` directory (with a suffix if that exists)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{cell}-{time.strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(1, 1000):
        candidate = base / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise OSError(f"{base}: cannot find a free run directory name for {stem}")


def read_config_file(path):
    """Options from a JSON or TOML file -> dict with ``-`` in keys turned into ``_``.

    The file holds one object (JSON) or top-level keys (TOML) named like the command-line options, e.g.
    ``{"hidden_dim": 256, "epochs": 10}``. Raises :class:`ConfigError` naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ConfigError(f"{path}: config files must be JSON (.json) or TOML (.toml), got {suffix or 'no suffix'!r}")
    raw = read_bounded(path, _MAX_CONFIG_BYTES, "config file", ConfigError)
    try:
        text = raw.decode("utf-8")
        if suffix == ".json":
            options = json.loads(text)
        else:
            import tomllib

            options = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    except RecursionError:
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()} (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()} ({exc})") from exc
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: expected an object of option names to values, got {type(options).__name__}")
    return {str(key).replace("-", "_"): value for key, value in options.items()}
