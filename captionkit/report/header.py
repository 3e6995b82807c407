"""The page's account of each run: its checkpoint, cell and sizes, the options that differ between the runs shown,
how long it trained and how it ended, its best validation, its scores on the page's pictures, and its plots.

Everything but the scores is read from the run directory as ``captionkit compare`` reads it
(:mod:`captionkit.comparison`); values are kept as text for the page to escape. The plots are files inside the page's
folder: each run's ``loss.png`` copied (a regular file of bounded size only: run directories may be shared), and
with several runs the comparison plot, drawn there.
"""
from dataclasses import dataclass, field
from pathlib import Path

from captionkit.comparison import compare_runs
from captionkit.plotting import plot_comparison
from captionkit.progress import format_duration
from captionkit.runs import RunDirectory
from captionkit.safeio import atomic_write, read_bounded

__all__ = ["PLOTS_DIR", "RunHeader", "run_headers"]

PLOTS_DIR = "plots"
_MAX_PLOT_BYTES = 64 * 2**20  # loss.png is about 100 KB
_CORPUS = ("BLEU-4", "CIDEr-D", "ROUGE-L", "perplexity")


@dataclass
class RunHeader:
    """One run on the page: its ``name``, ``facts`` (label, text) in reading order, and ``plots`` (path relative to
    the page, what it shows)."""

    name: str
    facts: list
    plots: list = field(default_factory=list)


def _ended(row):
    if row["stopped_early"]:
        return "stopped early (patience ran out)"
    if row["interrupted"]:
        return f"interrupted ({row['interrupted']})"
    return "finished"


def _number(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _facts(row, config, checkpoint, corpus, differing):
    attention = config.get("attention")
    sizes = f"hidden {row['hidden_dim']}, word vectors {row['wordvec_dim']}"
    facts = [("checkpoint", checkpoint), ("cell", str(row["cell"]) + (f" with {attention} attention" if attention
                                                                        else "")),
             ("sizes", sizes)]
    facts += [(name, repr(row["options"][name])) for name in differing]
    best = row["best"]
    facts += [
        ("iterations", f"{_number(row['iteration'])}/{_number(row['num_iterations'])}"),
        ("training time", "-" if row["elapsed"] is None else format_duration(row["elapsed"])),
        ("ended", _ended(row)),
        ("best validation", "-" if best is None else f"{best['metric']} {_number(best['value'])} at iteration "
                                                     f"{best['iteration']}"),
    ]
    if corpus is not None:
        facts.append(("on these pictures", ", ".join(f"{name} {corpus[name]:.4f}" for name in _CORPUS)
                      + " (corpus scores, as captionkit evaluate gives them; CIDEr-D is the mean of the pictures')"))
    return facts


def _copy_plot(source, out_dir, name):
    """``source`` copied to ``out_dir/plots/name`` -> its path relative to ``out_dir``, or None when it is missing
    or not a regular file of bounded size."""
    try:
        content = read_bounded(source, _MAX_PLOT_BYTES, "plot")
    except (ValueError, OSError):
        return None
    relative = f"{PLOTS_DIR}/{name}"
    (Path(out_dir) / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(out_dir) / relative) as f:
        f.write(content)
    return relative


def run_headers(reports, checkpoints, corpora, out_dir):
    """``(headers, comparison)``: a :class:`RunHeader` per run of ``reports`` (:func:`captionkit.comparison.read_runs`),
    given the checkpoint each used (text) and its corpus scores on the page's pictures (or None: pictures without
    references), and with several runs the comparison plot ``(path relative to out_dir, what it shows)``, else None.
    Plots are written into ``out_dir``."""
    table = compare_runs(reports)
    headers = []
    for k, (report, row, checkpoint, corpus) in enumerate(zip(reports, table["runs"], checkpoints, corpora)):
        header = RunHeader(row["run"], _facts(row, report.config, checkpoint, corpus, table["differing"]))
        loss = _copy_plot(RunDirectory(report.path).loss_plot, out_dir, f"run-{k + 1}-loss.png")
        if loss is not None:
            header.plots.append((loss, f"{row['run']}: training loss and validation scores (loss.png)"))
        headers.append(header)
    if len(reports) == 1:
        return headers, None
    (Path(out_dir) / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    plot_comparison(reports, table["metric"], Path(out_dir) / PLOTS_DIR / "compare.png")
    return headers, (f"{PLOTS_DIR}/compare.png", f"the runs' losses and validation {table['metric']} (compare.png)")

