"""The options of a training run, declared once: :data:`OPTIONS`.

Each :class:`Option` gives a name, its kind and default, its check, the help text users read and whether a resumed
run may change it. Everything else is made from this table: :class:`TrainConfig` (a frozen dataclass with one field
per option), :func:`validate_options` (used for ``captionkit train``'s command line, ``--config`` files, the
options stored in checkpoints and :func:`captionkit.train`'s arguments), :data:`RESUMABLE_OPTIONS`, the click
options of ``captionkit train`` (:mod:`captionkit.cli.train`) and the options table of docs/training.md
(:func:`markdown_table`, checked by a test).
"""
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captionkit import optim
from captionkit.backend import BACKENDS
from captionkit.checks import number
from captionkit.precision import PRECISIONS
from captionkit.runs import ConfigError

__all__ = ["MONITORS", "OPTIONS", "RESUMABLE_OPTIONS", "Option", "TrainConfig", "markdown_table", "option",
           "validate_options"]

# What --monitor may watch: the validation scores (higher is better) and the validation loss and perplexity (lower).
MONITORS = {"CIDEr-D": "max", "BLEU-1": "max", "BLEU-2": "max", "BLEU-3": "max", "BLEU-4": "max", "ROUGE-L": "max",
            "loss": "min", "perplexity": "min"}


@dataclass(frozen=True)
class Option:
    """One training option. ``kind``: ``int`` (``minimum``, ``maximum``), ``float`` (positive, finite), ``bool``,
    ``text``, ``path`` (made absolute) or ``choice`` (``choices``); ``optional``: None is allowed (meaning what the
    help says); ``resumable``: a resumed run may give it anew (it changes neither the model, the data nor the
    sequence of updates)."""

    name: str
    kind: str
    default: object
    help: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple = ()
    optional: bool = False
    resumable: bool = False
    metavar: str | None = None

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """``value`` normalised, or ValueError saying what is expected."""
        if value is None and self.optional:
            return None
        expected = self._expected()
        if self.kind == "int":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                    or value < self.minimum or (self.maximum is not None and value > self.maximum):
                raise ValueError(expected)
            return int(value)
        if self.kind == "float":
            try:
                if self.minimum is not None:
                    return number(self.name, value, minimum=self.minimum)
                return number(self.name, value, above=True)
            except ValueError:
                raise ValueError(expected) from None
        if self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(expected)
            return bool(value)
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(expected)
            return value
        if not isinstance(value, (str, Path)) or not str(value):
            raise ValueError(expected)
        return str(Path(value).expanduser().resolve()) if self.kind == "path" else value

    def _expected(self):
        text = {
            "int": f"an integer >= {self.minimum}" + (f" and <= {self.maximum}" if self.maximum is not None else ""),
            "float": "a positive finite number" if self.minimum is None else f"a finite number >= {self.minimum}",
            "bool": "true or false",
            "choice": f"one of {', '.join(map(str, self.choices))}",
            "text": "a non-empty string",
            "path": "a path",
        }[self.kind]
        return text + (" or null" if self.optional else "")


OPTIONS = (
    Option("cell", "text", "rnn", "Recurrent cell: 'rnn' is built in; 'lstm' and 'gru' come from their plugins.",
           metavar="NAME"),
    Option("data", "path", None, "A captioning bundle directory (from `captionkit data import`, or the CS231n COCO "
           "bundle). Default: the built-in dataset (made on first use), or $CAPTIONKIT_DATA_DIR.", optional=True,
           metavar="DIR"),
    Option("pca", "bool", True, "Use the bundle's PCA-reduced features when it has them (*_features_pca.h5, or the "
           "assignment's *_pca.h5), or the encoder's full ones."),
    Option("init_from", "path", None, "Start from the weights of a run (its best checkpoint, else its latest) or of "
           "one checkpoint file: fine-tuning on new data or with a new learning rate; the optimiser and the "
           "iteration count start afresh. The cell, sizes and vocabulary must be the run's.", optional=True,
           metavar="RUN"),
    Option("objective", "choice", "xe", "'xe': word-level cross-entropy; 'scst': self-critical sequence training on "
           "CIDEr-D (fine-tunes a trained model: use with --init-from; docs/training.md).", choices=("xe", "scst")),
    Option("scst_samples", "int", 5, "SCST: captions sampled per image (temperature 1).", minimum=1, maximum=100,
           metavar="K"),
    Option("scst_baseline", "choice", "greedy", "SCST: the reward baseline, the greedy caption's CIDEr-D (Rennie et "
           "al.) or the mean of the image's other samples.", choices=("greedy", "mean")),
    Option("max_train", "int", None, "Train on N captions drawn (seeded) from the training split. Default: all.",
           minimum=1, optional=True, metavar="N"),
    Option("hidden_dim", "int", 256, "Size of the recurrent hidden state.", minimum=1, metavar="N"),
    Option("wordvec_dim", "int", 128, "Size of the word embeddings.", minimum=1, metavar="N"),
    Option("attention", "text", None, "Read a grid of image regions through this attention mechanism at every word "
           "('soft' is built in; docs/attention.md); needs a bundle of grid features. Default: none, the pooled "
           "model (a grid is then averaged).", optional=True, metavar="NAME"),
    Option("attention_dim", "int", None, "Size of the attention layer. Default: --hidden-dim.", minimum=1,
           optional=True, metavar="N"),
    Option("attention_penalty", "float", 1.0, "Weight of the doubly stochastic penalty, which asks every region to "
           "be looked at over a caption (0: none).", minimum=0, metavar="WEIGHT"),
    Option("batch_size", "int", 100, "Captions per minibatch.", minimum=1, metavar="N"),
    Option("epochs", "int", 10, "Passes over the training captions (an epoch is captions / batch size iterations).",
           minimum=1, resumable=True, metavar="N"),
    Option("update_rule", "choice", "adam", "Optimiser.", choices=tuple(optim.UPDATE_RULES)),
    Option("lr", "float", 2e-3, "Initial learning rate.", metavar="RATE"),
    Option("lr_decay", "float", 0.95, "Multiply the learning rate by this after every epoch.", metavar="FACTOR"),
    Option("seed", "int", 0, "Seed of model initialisation, minibatch sampling, the --max-train subset and the "
           "validation images; the same seed gives the same parameters.", minimum=0, maximum=2**32 - 1),
    Option("dtype", "choice", "float32", "Floating-point type of parameters and computations.",
           choices=("float32", "float64")),
    Option("precision", "choice", "fp32", "How matrix products run: 'fp32' in --dtype; 'bf16' with both inputs "
           "rounded to bfloat16 and float32 sums, like torch.autocast (parameters, Adam, the cell's gates, softmax "
           "and loss stay float32). bf16 needs --dtype float32, a cell of the engine (rnn, lstm, gru) and, with "
           "--attention, 'soft'; compiled, a CPU with AVX512-BF16 (`captionkit info` says), else --backend numpy "
           "emulates it, slower. docs/precision.md.", choices=PRECISIONS),
    Option("backend", "choice", "auto", "'cython': compiled kernels; 'numpy': the reference; 'auto': compiled when "
           "built.", choices=tuple(BACKENDS), resumable=True),
    Option("eval_every", "int", None, "Validate every N iterations (0: only at the end). Default: once per epoch.",
           minimum=0, optional=True, resumable=True, metavar="N"),
    Option("eval_images", "int", 500, "Validation images scored at each validation (a fixed, seeded choice).",
           minimum=1, resumable=True, metavar="N"),
    Option("monitor", "choice", "CIDEr-D", "Validation score that picks the best checkpoint (checkpoints/best.npz) "
           "and drives --patience; loss and perplexity count lower as better.", choices=tuple(MONITORS)),
    Option("patience", "int", None, "Stop after N validations in a row without a better --monitor score (resume "
           "with a larger N to go on). Default: never stop early.", minimum=1, optional=True, resumable=True,
           metavar="N"),
    Option("checkpoint_every", "int", None, "Save a checkpoint every N iterations (also at the end and on Ctrl-C). "
           "Default: once per epoch.", minimum=1, optional=True, resumable=True, metavar="N"),
    Option("keep_checkpoints", "int", 3, "Keep only the N most recent checkpoints (best.npz is kept apart).",
           minimum=1, resumable=True, metavar="N"),
    Option("num_samples", "int", 16, "Validation images captioned in samples.txt and samples.png.", minimum=0,
           resumable=True, metavar="N"),
)
_BY_NAME = {option.name: option for option in OPTIONS}
RESUMABLE_OPTIONS = frozenset(option.name for option in OPTIONS if option.resumable)


def option(name):
    """The :class:`Option` called ``name``, for a command other than ``captionkit train`` that takes it too."""
    return _BY_NAME[name]


def _from_mapping(cls, options, source="options"):
    """A config from ``{name: value}`` (defaults for the rest), checked; ConfigError names ``source``."""
    return cls(**validate_options(options, source))


def _to_dict(self):
    return dataclasses.asdict(self)


TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(o.name, object, dataclasses.field(default=o.default)) for o in OPTIONS], frozen=True,
    namespace={"from_mapping": classmethod(_from_mapping), "to_dict": _to_dict,
               "__doc__": "Every option of a training run (:data:`OPTIONS`); the defaults train on the built-in "
                          "dataset."},
)
TrainConfig.__module__ = __name__


def validate_options(options, source="options"):
    """Check ``{name: value}`` against :data:`OPTIONS` -> normalised dict (paths made absolute).

    Raises ConfigError naming ``source``, the option and the value at fault (and the closest option name for a
    misspelt one).
    """
    checked = {}
    for name, value in options.items():
        if name not in _BY_NAME:
            close = difflib.get_close_matches(name, _BY_NAME, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(_BY_NAME)}"
            raise ConfigError(f"{source}: unknown option {name!r}{hint}")
        try:
            checked[name] = _BY_NAME[name].check(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: option {name!r} is {value!r}, expected {exc}") from None
    return checked


def markdown_table():
    """The options table of docs/training.md: option, default, whether resumable, meaning."""
    rows = ["| option | default | on resume | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        flag = f"{o.flag} / --no-{o.flag[2:]}" if o.kind == "bool" else f"{o.flag} {o.metavar or o.kind.upper()}"
        default = "-" if o.default is None else f"`{o.flag}`" if o.default is True else str(o.default)
        rows.append(f"| `{flag}` | {default} | {'may change' if o.resumable else 'kept'} | {o.help} |")
    return "\n".join(rows) + "\n"
