"""captionkit.checks: the one integer and number check every layer uses, bounds included."""
import math

import numpy as np
import pytest

from captionkit.checks import integer, number


@pytest.mark.parametrize("value", [1, 7, np.int64(3), 2**40])
def test_integers_in_range_come_back_as_int(value):
    assert integer("k", value) == int(value) and type(integer("k", value)) is int


@pytest.mark.parametrize("value", [0, -1, 1.0, True, np.bool_(True), "2", None])
def test_integers_out_of_range_or_of_another_type_are_refused_by_name(value):
    with pytest.raises(ValueError, match=r"^k must be a positive integer, got "):
        integer("k", value)


def test_an_upper_bound_is_inclusive_and_named():
    assert integer("k", 5, minimum=1, maximum=5) == 5
    with pytest.raises(ValueError, match=r"^k must be in \[1, 5\] \(an integer\), got 6$"):
        integer("k", 6, minimum=1, maximum=5)
    assert integer("k", None, optional=True) is None


def test_numbers_and_their_bounds():
    assert number("lr", 0) == 0.0 and number("lr", np.float32(0.5)) == 0.5
    with pytest.raises(ValueError, match=r"^beta must be a finite number >= 0 and < 1, got 1$"):
        number("beta", 1, below=1.0)
    assert number("beta", 0.999, below=1.0) == 0.999
    with pytest.raises(ValueError, match=r"^t must be a finite number > 0, got 0$"):
        number("t", 0, above=True)
    for bad in (math.nan, math.inf, -1e-9, True, "0.1"):
        with pytest.raises(ValueError, match=r"^x must be a finite number >= 0"):
            number("x", bad)
