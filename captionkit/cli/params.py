"""Click parameter types the commands share."""
import math

import click

from captionkit.images import MAX_PICTURE_PIXELS, PILLOW_HARD_LIMIT
from captionkit.options import option

__all__ = ["FiniteFloat", "max_picture_pixels_option", "precision_option"]


class FiniteFloat(click.FloatRange):
    """A finite number >= ``minimum`` (> with ``above``). click's FloatRange lets ``nan`` through (it fails no
    comparison) and ``inf``, which no option here means, so both are refused as usage errors naming the option."""

    name = "finite float"

    def __init__(self, minimum=0.0, above=False):
        super().__init__(min=minimum, min_open=above)

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


def max_picture_pixels_option(function):
    """``--max-picture-pixels N``: the largest picture (width x height) read, checked before it is decoded."""
    return click.option(
        "--max-picture-pixels", "max_pixels", type=click.IntRange(1, PILLOW_HARD_LIMIT), default=MAX_PICTURE_PIXELS,
        show_default=True, metavar="N",
        help=f"Refuse pictures of more pixels (width x height) than this, before decoding them; at most "
             f"{PILLOW_HARD_LIMIT} (Pillow's own limit).")(function)


def precision_option(function):
    """``--precision`` for a command that runs a trained model: the choices of the training option
    (:mod:`captionkit.options`), defaulting to the precision the run was trained at."""
    return click.option(
        "--precision", type=click.Choice(list(option("precision").choices)), default=None,
        help="How the model's matrix products run: fp32, or bf16 (inputs rounded to bfloat16, float32 sums; on the "
             "compiled backend it needs a CPU with AVX512-BF16, which `captionkit info` shows). Default: the "
             "precision RUN was trained at (fp32 for runs from before this option).")(function)
