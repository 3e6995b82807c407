"""The ``captionkit`` command line.

Only this package imports click and prints; each command group lives in its own module and calls the library API.
"""
import click

from captionkit import __version__
from captionkit.cli.errors import CaptionkitGroup


@click.group(cls=CaptionkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="captionkit")
def main():
    """Train, sample and evaluate recurrent image-captioning models on a CPU.

    Start with `captionkit train --cell rnn`: it trains on the built-in dataset and prints where the run went.
    """


from captionkit.cli import data as _data  # noqa: E402  (registers the `data` group)

main.add_command(_data.data)

from captionkit.cli import cells as _cells  # noqa: E402  (the `cells` and `gradcheck` commands)

main.add_command(_cells.cells)
main.add_command(_cells.gradcheck)

from captionkit.cli import train as _train  # noqa: E402  (the `train` command)

main.add_command(_train.train_command)

from captionkit.cli import evaluate as _evaluate  # noqa: E402  (the `sample` and `evaluate` commands)

main.add_command(_evaluate.sample)
main.add_command(_evaluate.evaluate_command)

from captionkit.cli import caption as _caption  # noqa: E402  (the `caption` command)

main.add_command(_caption.caption)

from captionkit.cli import encoders as _encoders  # noqa: E402  (the `encoders` command)

main.add_command(_encoders.encoders)

from captionkit.cli import compare as _compare  # noqa: E402  (the `compare` command)

main.add_command(_compare.compare)

from captionkit.cli import report as _report  # noqa: E402  (the `report` command)

main.add_command(_report.report)

from captionkit.cli import info as _info  # noqa: E402  (the `info` command)

main.add_command(_info.info)
