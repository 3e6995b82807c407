"""The checks of integer and real arguments that every public function shares, so each says the same thing."""
import math

import numpy as np

__all__ = ["integer", "number"]


def integer(name, value, minimum=1, optional=False, maximum=None):
    """``value`` as an int when it is an integer >= ``minimum`` (and <= ``maximum`` when given; bools are not; None
    too when ``optional``); else ValueError: ``"{name} must be a positive integer, got ..."`` (or ``an integer >=
    minimum``, ``in [minimum, maximum] (an integer)``, ``or None``)."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum \
            or (maximum is not None and value > maximum):
        if maximum is not None:
            kind = f"in [{minimum}, {maximum}] (an integer)"
        else:
            kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}{' or None' if optional else ''}, got {value!r}")
    return int(value)


def number(name, value, minimum=0.0, above=False, optional=False, below=None):
    """``value`` as a float when it is a finite real number >= ``minimum`` (> with ``above``; and < ``below`` when
    given; bools are not; None too when ``optional``); else ValueError: ``"{name} must be a finite number > 0, got
    ..."`` (``... >= 0 and < 1`` with ``below``)."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < minimum or (above and value == minimum) \
            or (below is not None and value >= below):
        upper = f" and < {below:g}" if below is not None else ""
        raise ValueError(f"{name} must be a finite number {'>' if above else '>='} {minimum:g}{upper}"
                         f"{' or None' if optional else ''}, got {value!r}")
    return float(value)
