"""Comparing training runs: what differs between their options, and how each did (``captionkit compare``).

Everything is read from the run directories (``config.json``, ``summary.json``, ``metrics.jsonl``); nothing is
recomputed, so comparing runs of different machines or versions is fine. The best score of a run that predates
``best`` in its summary is taken from its validation records.

Run directories may be shared or crafted: a value of the wrong kind in ``summary.json`` (a string or NaN where a
number belongs) reads as absent, unusable metrics records are skipped and counted (:attr:`RunReport.skipped`), and
option values are passed on as they are for the caller to print safely.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path

from captionkit.options import MONITORS, OPTIONS
from captionkit.runs import RunDirectory

__all__ = ["RunReport", "compare_runs", "read_run", "read_runs"]

SCORES = ("BLEU-4", "CIDEr-D", "ROUGE-L", "loss", "perplexity")


@dataclass
class RunReport:
    """One run as ``captionkit compare`` sees it."""

    name: str
    path: Path
    config: dict
    summary: dict
    train: list = field(default_factory=list)  # (iteration, loss)
    val: list = field(default_factory=list)  # validation records
    skipped: int = 0  # unusable records of metrics.jsonl

    def best(self, metric):
        """``{"metric", "value", "iteration"}`` of the best validation by ``metric``, or None."""
        recorded = self.summary.get("best")
        if (isinstance(recorded, dict) and recorded.get("metric") == metric and _is_number(recorded.get("value"))
                and type(recorded.get("iteration")) is int):
            return {"metric": metric, "value": recorded["value"], "iteration": recorded["iteration"]}
        scored = [r for r in self.val if isinstance(r.get(metric), (int, float))]
        if not scored:
            return None
        pick = max if MONITORS[metric] == "max" else min
        record = pick(scored, key=lambda r: r[metric])
        return {"metric": metric, "value": record[metric], "iteration": record["iteration"]}

    def final(self):
        """The last validation's scores (the numbers among them)."""
        recorded = self.summary.get("val_metrics")
        scores = recorded if isinstance(recorded, dict) and recorded else (self.val[-1] if self.val else {})
        return {name: value for name, value in scores.items() if _is_number(value)}


def _is_number(value):
    return type(value) in (int, float) and math.isfinite(value)


def _summary_number(summary, key):
    value = summary.get(key)
    return value if _is_number(value) else None


def read_run(path):
    """A :class:`RunReport` of the run directory ``path``; ValueError when it is not one."""
    run = RunDirectory(path)
    if not run.config.is_file():
        raise ValueError(f"{path}: not a run directory (no config.json)")
    records, skipped = run.read_metrics_counted()
    return RunReport(
        name=Path(path).name, path=Path(path), config=run.read_json(run.config), summary=run.read_json(run.summary),
        train=[(r["iteration"], r["loss"]) for r in records if r["kind"] == "train" and "loss" in r],
        val=[r for r in records if r["kind"] == "val"], skipped=skipped,
    )


def read_runs(paths):
    """:func:`read_run` of each path, named so that the names differ: each run's folder name, or as many of its
    last path parts as it takes (``a/rnn-0`` and ``b/rnn-0``). ValueError when a run is given twice."""
    seen = {}
    for path in paths:
        key = Path(path).resolve()
        if key in seen:
            raise ValueError(f"{path}: the same run as {seen[key]}, given twice; name each run once")
        seen[key] = path
    reports = [read_run(path) for path in paths]
    parts = [report.path.resolve().parts for report in reports]
    for report, path_parts in zip(reports, parts):
        depth = 1
        while depth < len(path_parts) and sum(p[-depth:] == path_parts[-depth:] for p in parts) > 1:
            depth += 1
        report.name = "/".join(path_parts[-depth:])
    return reports


def compare_runs(reports, metric=None):
    """``{"metric", "differing": [option names], "runs": [row, ...]}`` for ``reports`` (:func:`read_runs` of the
    run directories).

    ``metric``: the score that picks each run's best validation (default: the first run's ``monitor``, else
    CIDEr-D). A row holds the run's name and path, cell and sizes, the values of the options that differ between
    the runs, its best validation, its last validation's scores, iterations, time and how it ended.
    """
    if not reports:
        raise ValueError("compare needs at least one run directory")
    monitor = reports[0].config.get("monitor")
    metric = metric or (monitor if isinstance(monitor, str) else None) or "CIDEr-D"
    if metric not in MONITORS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(MONITORS)}")
    names = [o.name for o in OPTIONS]
    differing = [name for name in names
                 if len({repr(r.config.get(name)) for r in reports}) > 1 and name not in ("cell", "data")]
    if len({repr(r.config.get("data")) for r in reports}) > 1:
        differing.insert(0, "data")
    rows = []
    for report in reports:
        final = report.final()
        rows.append({
            "run": report.name, "path": str(report.path), "cell": report.config.get("cell"),
            "hidden_dim": report.config.get("hidden_dim"), "wordvec_dim": report.config.get("wordvec_dim"),
            "options": {name: report.config.get(name) for name in differing},
            "best": report.best(metric),
            "final": {name: final[name] for name in SCORES if name in final},
            "iteration": _summary_number(report.summary, "iteration"),
            "num_iterations": _summary_number(report.summary, "num_iterations"),
            "elapsed": _summary_number(report.summary, "elapsed"),
            "stopped_early": report.summary.get("stopped_early") is True,
            "interrupted": report.summary.get("interrupted"), "skipped_records": report.skipped,
        })
    return {"metric": metric, "differing": differing, "runs": rows}
