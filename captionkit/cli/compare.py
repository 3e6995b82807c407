"""`captionkit compare`: several training runs side by side, as a table and a plot."""
import json
from pathlib import Path

import click

from captionkit.cli.table import echo_table
from captionkit.cli.terminal import quoted
from captionkit.comparison import compare_runs, read_runs
from captionkit.options import MONITORS
from captionkit.plotting import plot_comparison
from captionkit.progress import format_duration


def _number(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _strict_json(table):
    """``table`` as strict JSON: a non-finite number a run's files hold (NaN, Infinity) is written as null."""
    return json.dumps(json.loads(json.dumps(table), parse_constant=lambda _: None), indent=2, allow_nan=False)


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False), metavar="RUN...")
@click.option("--metric", type=click.Choice(list(MONITORS)), default=None,
              help="Score that picks each run's best validation. Default: the first run's --monitor (CIDEr-D).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("compare.png"),
              show_default=True, metavar="FILE.png", help="Where to draw the runs' loss and validation curves.")
@click.option("--no-plot", is_flag=True, help="Do not draw the plot.")
@click.option("--json", "json_output", is_flag=True, help="Print the comparison as one JSON object.")
def compare(runs, metric, plot_path, no_plot, json_output):
    """Compare training runs: cell, sizes, the options that differ, best and final validation scores, time.

    Each RUN is a run directory written by `captionkit train`. The table shows each run's best validation by
    --metric (the one kept as checkpoints/best.npz when it is the run's --monitor) and its last validation's
    scores (CIDEr-D on the COCO caption toolkit's scale, loss per caption, perplexity per word); the plot overlays
    their training and validation loss and the --metric curve.

    \b
    Examples:
      captionkit compare runs/rnn-* runs/lstm-* runs/gru-*
      captionkit compare runs/a runs/b --metric BLEU-4 --plot ab.png
    """
    reports = read_runs(runs)
    for report in reports:
        if report.skipped:
            click.echo(f"{quoted(report.path / 'metrics.jsonl')}: {report.skipped} unusable record(s) skipped",
                       err=True)
    table = compare_runs(reports, metric)
    if not no_plot:
        plot_comparison(reports, table["metric"], plot_path)
    if json_output:
        click.echo(_strict_json({**table, "plot": None if no_plot else str(plot_path)}))
        return
    metric = table["metric"]
    header = ["run", "cell", "hidden", "wordvec", *table["differing"], f"best {metric}", "at",
              "BLEU-4", "CIDEr-D", "ROUGE-L", "val loss", "perplexity", "iterations", "time", "ended"]
    rows = []
    for row in table["runs"]:
        best, final = row["best"] or {}, row["final"]
        ended = ("stopped early" if row["stopped_early"] else f"interrupted ({row['interrupted']})"
                 if row["interrupted"] else "finished")
        rows.append([row["run"], row["cell"], row["hidden_dim"], row["wordvec_dim"],
                     *[row["options"][name] for name in table["differing"]],
                     _number(best.get("value"), 4), best.get("iteration", "-"),
                     *[_number(final.get(name)) for name in ("BLEU-4", "CIDEr-D", "ROUGE-L", "loss", "perplexity")],
                     f"{_number(row['iteration'])}/{_number(row['num_iterations'])}",
                     format_duration(row["elapsed"]) if row["elapsed"] is not None else "-", ended])
    echo_table(header, rows)
    if not no_plot:
        click.echo(f"\nCurves: {quoted(plot_path)}")
