"""`captionkit train`: train a captioning model and leave a run directory with everything worth looking at."""
import json
import os
import signal
import sys
import time

import click

from captionkit import optim
from captionkit.backend import BACKENDS
from captionkit.data import DATA_DIR_ENV
from captionkit.distributed import abort_on_error, local_world, world
from captionkit.runs import ConfigError, read_config_file
from captionkit.synthetic import builtin_dataset_dir
from captionkit.options import RESUMABLE_OPTIONS, TrainConfig, validate_options
from captionkit.training import train

_DEFAULTS = TrainConfig()
_EXIT_STATUS = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
_METRICS_SHOWN = ("BLEU-1", "BLEU-4", "CIDEr-D", "ROUGE-L")


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


def _format_duration(seconds):
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _format_metrics(scores):
    return "  ".join(f"{name} {scores[name]:.3f}" for name in _METRICS_SHOWN if name in scores)


class _ProgressLine:
    """Renders training events for people: a progress line with loss and ETA on stderr, redrawn in place on a
    terminal and printed every few percent otherwise; validation scores and checkpoints as their own lines."""

    WIDTH = 24

    def __init__(self):
        self.stream = sys.stderr
        self.interactive = self.stream.isatty()
        self.last_percent = -1
        self.last_draw = 0.0
        self.line_open = False

    def _print(self, text):
        if self.line_open:
            click.echo("", file=self.stream)
            self.line_open = False
        click.echo(text, file=self.stream)

    def __call__(self, event):
        kind = event["event"]
        if kind == "start":
            resumed = f", resumed from {event['resumed_from']}" if event["resumed_from"] else ""
            config = event["config"]
            self._print(
                f"Training the {config['cell']} cell (hidden {config['hidden_dim']}, word vectors "
                f"{config['wordvec_dim']}) for {event['num_iterations']} iterations "
                f"({event['iterations_per_epoch']} per epoch){resumed}."
            )
            self._print(f"Run directory: {event['run_dir']}")
        elif kind == "iteration":
            self._iteration(event)
        elif kind == "eval":
            self._print(f"  val @ iteration {event['iteration']} ({event['images']} images): "
                        f"{_format_metrics(event['metrics'])}")

    def _iteration(self, event):
        it, total = event["iteration"], event["num_iterations"]
        percent = 100 * it // total
        now = time.monotonic()
        if self.interactive:
            if it != total and now - self.last_draw < 0.1:
                return
            filled = self.WIDTH * it // total
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(
                f"\r  [{bar}] {it}/{total}  epoch {event['epoch'] + 1 if it < total else event['epoch']}  "
                f"loss {event['loss']:.3f}  ETA {_format_duration(event['eta'])}   "
            )
            self.stream.flush()
            self.line_open = True
            self.last_draw = now
        elif percent // 5 > self.last_percent // 5 or it == total:
            click.echo(f"  iteration {it}/{total}  loss {event['loss']:.3f}  ETA {_format_duration(event['eta'])}",
                       file=self.stream)
        self.last_percent = percent

    def finish(self):
        if self.line_open:
            click.echo("", file=self.stream)
            self.line_open = False


def _json_events(event):
    click.echo(json.dumps(event, default=str))


def _explicit_options(ctx, names):
    """The options given on the command line or in the --config file (not those left at their defaults)."""
    sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.DEFAULT_MAP)
    return {name: ctx.params[name] for name in names if ctx.get_parameter_source(name) in sources}


def _describe_result(result):
    click.echo(f"Trained {result.iteration} iterations in {_format_duration(result.elapsed)}; "
               f"final loss {result.final_loss:.3f}.")
    if result.val_metrics:
        click.echo(f"Validation ({result.val_images} images, greedy): {_format_metrics(result.val_metrics)}")
    click.echo(f"Checkpoint: {result.checkpoint}")
    files = ["config.json", "metrics.jsonl", "loss.png", "samples.txt", "samples.png"]
    click.echo(f"Files: {', '.join(name for name in files if (result.run_dir / name).exists())}")


def _build_builtin_dataset():
    """Make the built-in dataset now if it is not cached yet, saying so: the first build takes several seconds."""
    if os.environ.get(DATA_DIR_ENV):
        return
    announced = []

    def progress(stage, done, total):
        if not announced:
            click.echo("Building the built-in dataset (first use only; it is cached for later runs)...", err=True)
            announced.append(True)
        if done == total:
            click.echo(f"  {stage}: {total}/{total}", err=True)

    builtin_dataset_dir(progress=progress)


@click.command("train")
@click.option("--cell", default=_DEFAULTS.cell, show_default=True, metavar="NAME",
              help="Recurrent cell: 'rnn' is built in; 'lstm' and 'gru' come from their plugins.")
@click.option("--data", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="A captioning bundle directory (from `captionkit data import`, or the CS231n COCO bundle). "
                   "Default: the built-in dataset (made on first use), or $CAPTIONKIT_DATA_DIR.")
@click.option("--pca/--no-pca", default=_DEFAULTS.pca, show_default=True,
              help="Use the bundle's PCA-reduced features (*_features_pca.h5, or the assignment's *_pca.h5) when it "
                   "has them, or the encoder's full ones.")
@click.option("--max-train", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train on N captions drawn (seeded) from the training split. Default: all.")
@click.option("--hidden-dim", type=click.IntRange(min=1), default=_DEFAULTS.hidden_dim, show_default=True,
              metavar="N", help="Size of the recurrent hidden state.")
@click.option("--wordvec-dim", type=click.IntRange(min=1), default=_DEFAULTS.wordvec_dim, show_default=True,
              metavar="N", help="Size of the word embeddings.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size, show_default=True,
              metavar="N", help="Captions per minibatch.")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs, show_default=True, metavar="N",
              help="Passes over the training captions (an epoch is captions / batch size iterations).")
@click.option("--update-rule", type=click.Choice(list(optim.UPDATE_RULES)), default=_DEFAULTS.update_rule,
              show_default=True, help="Optimiser.")
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True, metavar="RATE",
              help="Initial learning rate.")
@click.option("--lr-decay", type=float, default=_DEFAULTS.lr_decay, show_default=True, metavar="FACTOR",
              help="Multiply the learning rate by this after every epoch.")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=_DEFAULTS.seed, show_default=True,
              help="Seed of model initialisation, minibatch sampling and the --max-train subset; the same seed "
                   "gives the same parameters.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=_DEFAULTS.dtype, show_default=True,
              help="Floating-point type of parameters and computations.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=_DEFAULTS.backend, show_default=True,
              help="'cython': compiled kernels; 'numpy': the reference; 'auto': compiled when built.")
@click.option("--eval-every", type=click.IntRange(min=0), default=None, metavar="N",
              help="Score greedy captions of validation images every N iterations (0: only at the end). "
                   "Default: once per epoch.")
@click.option("--eval-images", type=click.IntRange(min=1), default=_DEFAULTS.eval_images, show_default=True,
              metavar="N", help="Validation images scored at each evaluation (a fixed, seeded choice).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="Save a checkpoint every N iterations (also at the end and on Ctrl-C). Default: once per epoch.")
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=_DEFAULTS.keep_checkpoints,
              show_default=True, metavar="N", help="Keep only the N most recent checkpoints.")
@click.option("--num-samples", type=click.IntRange(min=0), default=_DEFAULTS.num_samples, show_default=True,
              metavar="N", help="Validation images captioned in samples.txt and samples.png.")
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
              help="Machine-readable progress: one JSON object per line on stdout (events start, iteration, eval, "
                   "checkpoint, interrupted, done).")
@click.option("--distributed", is_flag=True,
              help="Run as one rank of an MPI job: `mpiexec -n K captionkit train --distributed ...` trains one model "
                   "on K processes, --batch-size being the global minibatch; rank 0 writes the run and reports. "
                   "Needs captionkit[mpi]; see docs/scaling.md.")
@click.pass_context
def train_command(ctx, out, resume, quiet, json_output, distributed, **options):
    """Train a captioning model and save everything in a run directory.

    With no options, `captionkit train` trains a vanilla RNN on the built-in dataset (rendered shape scenes with
    five captions each; about two minutes on 2 cores) and prints where the run went:

    \b
      config.json    the resolved options (reuse with --config)
      metrics.jsonl  loss per iteration, validation scores per evaluation
      checkpoints/   parameters, optimiser and RNG state (resume with --resume)
      loss.png       training loss and validation BLEU/CIDEr-D/ROUGE-L
      samples.txt    generated vs. ground-truth captions of validation images
      samples.png    the same as a picture grid (datasets with images)

    Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and stops (exit status 130/143); `captionkit train --resume
    RUN` continues and ends with exactly the parameters of an uninterrupted run.

    \b
    Examples:
      captionkit train --cell rnn
      captionkit train --data ~/coco_captioning --hidden-dim 512 --wordvec-dim 256 --epochs 5
      captionkit train --resume runs/rnn-20260101-120000 --epochs 20
      mpiexec -n 2 captionkit train --distributed --epochs 20
    """
    if quiet and json_output:
        raise click.UsageError("--quiet and --json exclude each other")
    # A resumed run keeps its checkpoint's options: pass on only those the user gave, not click's defaults.
    explicit = options if resume is None else _explicit_options(ctx, list(options))
    if json_output:
        report = _json_events
    elif quiet:
        report = None
    else:
        report = _ProgressLine()
    job = world(required=True) if distributed else local_world()
    if isinstance(report, _ProgressLine) and resume is None and explicit.get("data") is None and not distributed:
        _build_builtin_dataset()
    try:
        # A rank that fails must end the whole job, or the others would wait for it forever.
        with abort_on_error(job, lambda message: click.echo(f"Error: {message}", err=True)):
            result = train(explicit, out=out, resume=resume, callback=report, distributed=distributed)
    finally:
        if isinstance(report, _ProgressLine):
            report.finish()
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
        _describe_result(result)
        click.echo(f"Run saved in {result.run_dir}")
