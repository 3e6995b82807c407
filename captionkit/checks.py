"""The checks of integer and real arguments that every public function shares, so each says the same thing."""
import math

import numpy as np

__all__ = ["integer", "number"]


def integer(name, value, minimum=1, optional=False):
    """``value`` as an int when it is an integer >= ``minimum`` (bools are not; None too when ``optional``);
    else ValueError: ``"{name} must be a positive integer, got ..."`` (or ``an integer >= minimum``, ``or None``)."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}{' or None' if optional else ''}, got {value!r}")
    return int(value)


def number(name, value, minimum=0.0, above=False, optional=False):
    """``value`` as a float when it is a finite real number >= ``minimum`` (> with ``above``; bools are not; None too
    when ``optional``); else ValueError: ``"{name} must be a finite number > 0, got ..."``."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < minimum or (above and value == minimum):
        raise ValueError(f"{name} must be a finite number {'>' if above else '>='} {minimum:g}"
                         f"{' or None' if optional else ''}, got {value!r}")
    return float(value)
