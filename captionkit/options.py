"""The options of a training run: :class:`TrainConfig`, their one table of checks, and which may change on resume.

Everything that reads options checks them here: ``captionkit train`` (command line and ``--config`` files),
:func:`captionkit.train`, and checkpoints, whose stored options are checked when they are read.
"""
import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captionkit import optim
from captionkit.backend import BACKENDS
from captionkit.runs import ConfigError

__all__ = ["RESUMABLE_OPTIONS", "TrainConfig", "validate_options"]


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; the defaults train on the built-in dataset (the README gives how long each
    cell takes).

    Iteration counts (``eval_every``, ``checkpoint_every``) of None mean "once per epoch"; ``eval_every=0`` means
    "only at the end". ``data`` None is the built-in dataset (or ``$CAPTIONKIT_DATA_DIR``).
    """

    cell: str = "rnn"
    data: str | None = None
    pca: bool = True
    max_train: int | None = None
    hidden_dim: int = 256
    wordvec_dim: int = 128
    batch_size: int = 100
    epochs: int = 10
    update_rule: str = "adam"
    lr: float = 2e-3
    lr_decay: float = 0.95
    seed: int = 0
    dtype: str = "float32"
    backend: str = "auto"
    eval_every: int | None = None
    eval_images: int = 500
    checkpoint_every: int | None = None
    keep_checkpoints: int = 3
    num_samples: int = 16

    @classmethod
    def from_mapping(cls, options, source="options"):
        """A config from ``{name: value}`` (defaults for the rest), checked; ConfigError names ``source``."""
        return cls(**validate_options(options, source))

    def to_dict(self):
        return dataclasses.asdict(self)


# Options that may differ from the checkpoint's when resuming: they change neither the model nor the data nor the
# sequence of updates, only how long training goes on and what is reported along the way.
RESUMABLE_OPTIONS = frozenset(
    {"epochs", "backend", "eval_every", "eval_images", "checkpoint_every", "keep_checkpoints", "num_samples"}
)


def _integer(minimum, optional=False):
    def check(value):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"an integer >= {minimum}{' or null' if optional else ''}")
        return int(value)
    return check


def _positive_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError("a positive finite number")
    return float(value)


def _choice(choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"one of {', '.join(map(str, choices))}")
        return value
    return check


def _text(value):
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def _path_or_none(value):
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError("a directory path or null")
    return str(Path(value).expanduser().resolve())


def _boolean(value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError("true or false")
    return bool(value)


_CHECKS = {
    "cell": _text,
    "data": _path_or_none,
    "pca": _boolean,
    "max_train": _integer(1, optional=True),
    "hidden_dim": _integer(1),
    "wordvec_dim": _integer(1),
    "batch_size": _integer(1),
    "epochs": _integer(1),
    "update_rule": _choice(tuple(optim.UPDATE_RULES)),
    "lr": _positive_number,
    "lr_decay": _positive_number,
    "seed": _integer(0),
    "dtype": _choice(("float32", "float64")),
    "backend": _choice(BACKENDS),
    "eval_every": _integer(0, optional=True),
    "eval_images": _integer(1),
    "checkpoint_every": _integer(1, optional=True),
    "keep_checkpoints": _integer(1),
    "num_samples": _integer(0),
}


def validate_options(options, source="options"):
    """Check ``{name: value}`` against :class:`TrainConfig`'s fields -> normalised dict (paths made absolute).

    Raises ConfigError naming ``source``, the option and the value at fault (and the closest option name for a
    misspelt one).
    """
    checked = {}
    for name, value in options.items():
        if name not in _CHECKS:
            close = difflib.get_close_matches(name, _CHECKS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(_CHECKS)}"
            raise ConfigError(f"{source}: unknown option {name!r}{hint}")
        try:
            checked[name] = _CHECKS[name](value)
        except ValueError as exc:
            raise ConfigError(f"{source}: option {name!r} is {value!r}, expected {exc}") from None
    if checked.get("seed", 0) >= 2**32:
        raise ConfigError(f"{source}: option 'seed' is {checked['seed']}, expected an integer below 2**32")
    return checked
