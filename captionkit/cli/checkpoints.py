"""`--checkpoint best|latest|FILE`: which of RUN's checkpoints a command uses, one option for every command that
takes RUN, and the line on stderr naming the checkpoint it used (the choice itself is
:func:`captionkit.runs.resolve_checkpoint`'s)."""
import click

from captionkit.cli.terminal import quoted
from captionkit.loading import describe_checkpoint

__all__ = ["checkpoint_option", "say_checkpoint"]

checkpoint_option = click.option(
    "--checkpoint", default=None, metavar="best|latest|FILE",
    help="Which of RUN's checkpoints to use: best (checkpoints/best.npz, the best validation by the run's --monitor), "
         "latest (the last saved), or one of its checkpoint files (a path, or a name in RUN/checkpoints/). "
         "Default: best when the run has one, else latest.")


def say_checkpoint(info):
    """One line on stderr naming the checkpoint used (stdout stays the command's output), and the precision of its
    products when it is not the default fp32."""
    precision = info.get("precision", "fp32")
    click.echo(f"using {quoted(describe_checkpoint(info))}" + (f", precision {precision}" if precision != "fp32"
                                                                 else ""), err=True)
