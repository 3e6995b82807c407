"""Click parameter types the commands share."""
import math

import click

from captionkit.images import MAX_PICTURE_PIXELS, PILLOW_HARD_LIMIT

__all__ = ["FiniteFloat", "max_picture_pixels_option"]


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
