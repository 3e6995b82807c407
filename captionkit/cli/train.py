"""`captionkit train`: train a captioning model and leave a run directory with everything worth looking at.

The training options come from the one table :data:`captionkit.options.OPTIONS`: each becomes a click option here.
"""
import json
import signal

import click

from captionkit.cli.params import FiniteFloat
from captionkit.options import OPTIONS, RESUMABLE_OPTIONS, validate_options
from captionkit.runs import ConfigError, read_config_file
from captionkit.training import train

_EXIT_STATUS = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
_CLICK_TYPES = {"float": FiniteFloat(above=True), "text": str, "path": click.Path()}


def _load_config(ctx, param, value):
    """--config FILE: its options become the defaults, so options on the command line still win."""
    if value is None:
        return None
    try:
        options = read_config_file(value)
        out = options.pop("out", None)
        checked = validate_options(options, value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    if out is not None:
        checked["out"] = out
    ctx.default_map = {**(ctx.default_map or {}), **checked}
    return value


def _click_option(option):
    """The click option of one :class:`captionkit.options.Option`."""
    if option.kind == "bool":
        name = option.flag[2:]
        return click.option(f"--{name}/--no-{name}", default=option.default, show_default=True, help=option.help)
    if option.kind == "int":
        kind = click.IntRange(min=option.minimum, max=option.maximum)
    elif option.kind == "choice":
        kind = click.Choice(list(option.choices))
    elif option.kind == "float" and option.minimum is not None:
        kind = FiniteFloat(minimum=option.minimum)
    else:
        kind = _CLICK_TYPES[option.kind]
    return click.option(option.flag, type=kind, default=option.default, show_default=option.default is not None,
                        metavar=option.metavar, help=option.help)


def _training_options(command):
    for option in reversed(OPTIONS):
        command = _click_option(option)(command)
    return command


def _json_events(event):
    click.echo(json.dumps(event, default=str))


def _explicit_options(ctx, names):
    """The options given on the command line or in the --config file (not those left at their defaults)."""
    sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.DEFAULT_MAP)
    return {name: ctx.params[name] for name in names if ctx.get_parameter_source(name) in sources}


@click.command("train")
@_training_options
@click.option("--out", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Run directory to create. Default: runs/<cell>-<date>-<time> under the current directory.")
@click.option("--resume", type=click.Path(exists=True), default=None, metavar="RUN_OR_CHECKPOINT",
              help="Continue a run (its directory: the latest checkpoint) or from one checkpoint file. The run "
                   "keeps its options; only " + ", ".join(f"--{n.replace('_', '-')}" for n in
                                                            sorted(RESUMABLE_OPTIONS)) + " may change.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), callback=_load_config, is_eager=True,
              expose_value=False, metavar="FILE",
              help="Read options from a JSON or TOML file with keys named like these options (hidden_dim = 256); "
                   "options given on the command line win. A run's config.json works here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; print only the run directory at the end.")
@click.option("--json", "json_output", is_flag=True,
              help="Machine-readable progress: one JSON object per line on stdout (events dataset, start, short_run, "
                   "iteration, eval, checkpoint, early_stop, interrupted, already_done, done).")
@click.option("--distributed", is_flag=True,
              help="Run as one rank of an MPI job: `mpiexec -n K captionkit train --distributed ...` trains one model "
                   "on K processes, --batch-size being the global minibatch; rank 0 writes the run and reports. "
                   "Needs captionkit[mpi]; see docs/scaling.md.")
@click.pass_context
def train_command(ctx, out, resume, quiet, json_output, distributed, **options):
    """Train a captioning model and save everything in a run directory.

    With no options, `captionkit train` trains a vanilla RNN on the built-in dataset (rendered shape scenes with
    five captions each; the README gives how long each cell takes) and shows its progress; the run directory
    holds:

    \b
      config.json        the resolved options (reuse with --config)
      metrics.jsonl      loss per iteration; validation scores, loss and perplexity per validation
      checkpoints/       the last checkpoints, and best.npz (the best --monitor score); resume with --resume
      loss.png           training and validation loss, validation scores
      samples.txt/.png   generated vs. ground-truth captions of validation images
      summary.json       final and best scores, time

    Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and stops (exit status 130/143); `captionkit train --resume
    RUN` continues and ends with exactly the parameters of an uninterrupted run. Resuming a finished run changes
    nothing unless asked to train longer.

    \b
    Examples:
      captionkit train --cell rnn
      captionkit train --cell lstm --epochs 30 --patience 5
      captionkit train --data ~/coco_captioning --hidden-dim 512 --wordvec-dim 256 --epochs 5
      captionkit train --resume runs/rnn-20260101-120000 --epochs 20
      captionkit train --init-from runs/rnn-20260101-120000 --data mine --lr 5e-4 --epochs 3
      mpiexec -n 2 captionkit train --distributed --epochs 20
    """
    if quiet and json_output:
        raise click.UsageError("--quiet and --json exclude each other")
    # A resumed run keeps its checkpoint's options: pass on only those the user gave, not click's defaults.
    explicit = options if resume is None else _explicit_options(ctx, list(options))
    report = _json_events if json_output else None
    result = train(explicit, out=out, resume=resume, callback=report, progress=not (quiet or json_output),
                   distributed=distributed)
    if result is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    if result.interrupted is not None:
        if not json_output:
            click.echo(
                f"Interrupted by {result.interrupted} at iteration {result.iteration}/{result.num_iterations}; "
                f"checkpoint saved: {result.checkpoint}\nResume with: captionkit train --resume {result.run_dir}",
                err=True,
            )
        ctx.exit(_EXIT_STATUS[result.interrupted])
    if quiet:
        click.echo(str(result.run_dir))
    elif not json_output:
        files = ["config.json", "metrics.jsonl", "loss.png", "samples.txt", "samples.png", "summary.json"]
        click.echo(f"Files: {', '.join(name for name in files if (result.run_dir / name).exists())}")
        click.echo(f"Run saved in {result.run_dir} (matrix products at precision {result.config.precision})")
