"""Every real-valued option of every command refuses nan and inf as a usage error naming the option."""
import math

import click
import pytest
from click.testing import CliRunner

from captionkit.checks import number
from captionkit.cli import main
from captionkit.cli.params import FiniteFloat


def all_options(group, path=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from all_options(command, path + (name,))
        else:
            for param in command.params:
                if isinstance(param, click.Option):
                    yield path + (name,), param


def test_every_real_valued_option_is_finite():
    real = [(path, param) for path, param in all_options(main)
            if isinstance(param.type, click.types.FloatParamType) or param.type is click.FLOAT]
    assert len(real) >= 8  # train's rates, sample's and caption's decoding, fetch's time limits
    assert [(path, param.name) for path, param in real if not isinstance(param.type, FiniteFloat)] == []


@pytest.mark.parametrize("command, option", [
    (["train"], "--lr"),
    (["train"], "--lr-decay"),
    (["sample", "RUN"], "--temperature"),
    (["evaluate", "RUN"], "--length-penalty"),
    (["caption", "RUN", "PICTURES"], "--length-penalty"),
    (["data", "fetch", "coco", "DIR"], "--timeout"),
    (["data", "fetch", "coco", "DIR"], "--max-time"),
])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_are_usage_errors(tmp_path, command, option, value):
    # The option comes first, so click converts it before it looks at the (missing) arguments.
    words = command[:1] if command[0] != "data" else command[:2]
    rest = command[len(words):]
    result = CliRunner().invoke(main, [*words, option, value, *[str(tmp_path / r) for r in rest]])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "not a finite number" in result.output or "not in the range" in result.output


def test_finite_values_pass_through():
    assert FiniteFloat(above=True).convert("0.25", None, None) == 0.25
    assert FiniteFloat().convert(0, None, None) == 0.0
    with pytest.raises(click.BadParameter, match="not in the range x>0"):
        FiniteFloat(above=True).convert("0", None, None)


@pytest.mark.parametrize("value, kwargs, message", [
    (math.nan, {}, "x must be a finite number >= 0, got nan"),
    (math.inf, {"above": True}, "x must be a finite number > 0, got inf"),
    (0, {"above": True}, "x must be a finite number > 0, got 0"),
    (-1.5, {"minimum": -1}, "x must be a finite number >= -1, got -1.5"),
    (True, {}, "x must be a finite number >= 0, got True"),
    ("1", {}, "x must be a finite number >= 0, got '1'"),
    (None, {}, "got None"),
])
def test_number_check_refuses(value, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        number("x", value, **kwargs)


def test_number_check_accepts():
    assert number("x", 3) == 3.0 and type(number("x", 3)) is float
    assert number("x", None, optional=True) is None
    assert number("x", 0.0) == 0.0
