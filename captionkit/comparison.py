"""Comparing training runs: what differs between their options, and how each did (``captionkit compare``).

Everything is read from the run directories (``config.json``, ``summary.json``, ``metrics.jsonl``); nothing is
recomputed, so comparing runs of different machines or versions is fine. The best score of a run that predates
``best`` in its summary is taken from its validation records.
"""
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

    def best(self, metric):
        """``{"metric", "value", "iteration"}`` of the best validation by ``metric``, or None."""
        recorded = self.summary.get("best")
        if recorded and recorded.get("metric") == metric:
            return recorded
        scored = [r for r in self.val if isinstance(r.get(metric), (int, float))]
        if not scored:
            return None
        pick = max if MONITORS[metric] == "max" else min
        record = pick(scored, key=lambda r: r[metric])
        return {"metric": metric, "value": record[metric], "iteration": record["iteration"]}

    def final(self):
        """The last validation's scores."""
        return self.summary.get("val_metrics") or (self.val[-1] if self.val else {})


def read_run(path):
    """A :class:`RunReport` of the run directory ``path``; ValueError when it is not one."""
    run = RunDirectory(path)
    if not run.config.is_file():
        raise ValueError(f"{path}: not a run directory (no config.json)")
    records = run.read_metrics()
    return RunReport(
        name=Path(path).name, path=Path(path), config=run.read_json(run.config), summary=run.read_json(run.summary),
        train=[(r["iteration"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r],
        val=[r for r in records if r.get("kind") == "val"],
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
    metric = metric or reports[0].config.get("monitor") or "CIDEr-D"
    if metric not in MONITORS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(MONITORS)}")
    names = [o.name for o in OPTIONS]
    differing = [name for name in names
                 if len({repr(r.config.get(name)) for r in reports}) > 1 and name not in ("cell", "data")]
    if len({r.config.get("data") for r in reports}) > 1:
        differing.insert(0, "data")
    rows = []
    for report in reports:
        final = report.final()
        rows.append({
            "run": report.name, "path": str(report.path), "cell": report.config.get("cell"),
            "hidden_dim": report.config.get("hidden_dim"), "wordvec_dim": report.config.get("wordvec_dim"),
            "options": {name: report.config.get(name) for name in differing},
            "best": report.best(metric),
            "final": {name: final.get(name) for name in SCORES if name in final},
            "iteration": report.summary.get("iteration"), "num_iterations": report.summary.get("num_iterations"),
            "elapsed": report.summary.get("elapsed"), "stopped_early": report.summary.get("stopped_early", False),
            "interrupted": report.summary.get("interrupted"),
        })
    return {"metric": metric, "differing": differing, "runs": rows}
