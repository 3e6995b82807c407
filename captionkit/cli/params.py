"""Click parameter types the commands share."""
import math

import click

__all__ = ["FiniteFloat"]


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
