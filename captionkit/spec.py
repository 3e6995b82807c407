"""ModelSpec: a captioning model's architecture, the one place it is written down.

A spec names everything that decides a model's parameter shapes and what data it takes: the recurrent cell, the
shape of one image's features (``(D,)``, a pooled vector, is what every model takes today; ``(L, D)``, a grid of L
regions, is representable for attention models), the word-vector and hidden sizes, the vocabulary size and the
floating-point dtype. The model is built from it, checkpoints store it (:meth:`ModelSpec.to_meta`), and every
"does this model fit this data" question is answered by it (:meth:`ModelSpec.fits`), so each answer says the same.
"""
from dataclasses import dataclass

import numpy as np

from captionkit.attention import AttendedCell, get_attention
from captionkit.cells import CellSizes, get_cell
from captionkit.checks import integer
from captionkit.conditioning import GridProjection, ImageProjection

__all__ = ["DTYPES", "ModelSpec", "SpecMismatch"]

DTYPES = ("float32", "float64")
# The checkpoint's "model" record of a vector spec, in the order checkpoints have always written it.
_META_FIELDS = {"cell_type": str, "input_dim": int, "wordvec_dim": int, "hidden_dim": int, "dtype": str}
# Parameter names the model itself owns: a cell that declares one of them would overwrite it.
MODEL_PARAMS = ("W_embed", "W_proj", "b_proj", "W_vocab", "b_vocab")


class SpecMismatch(ValueError):
    """A model's spec and the data (or another spec) it is checked against differ; the message names what.

    ``field``: the spec field (or ``"vocabulary"``) that differs; ``expected``: the model's value; ``found``: the
    other side's (for the vocabulary, the two sizes)."""

    def __init__(self, message, field, expected, found):
        super().__init__(message)
        self.field, self.expected, self.found = field, expected, found


@dataclass(frozen=True)
class ModelSpec:
    """The architecture of a captioning model (immutable; two models with equal specs have equal shapes).

    ``feature_shape``: the shape of one image's features, ``(D,)`` or ``(L, D)``; ``dtype``: ``"float32"`` or
    ``"float64"`` (a numpy dtype or type is accepted and stored by name); ``attention``: the name of an attention
    mechanism (:mod:`captionkit.attention`) the cell reads a grid through at every step, or None (a grid is then
    pooled by its mean); ``attention_dim`` A, the mechanism's size (default: hidden_dim). Raises ValueError naming
    the field.
    """

    cell_type: str
    feature_shape: tuple
    wordvec_dim: int
    hidden_dim: int
    vocab_size: int
    dtype: str = "float32"
    attention: str | None = None
    attention_dim: int | None = None

    def __post_init__(self):
        if not isinstance(self.cell_type, str) or not self.cell_type:
            raise ValueError(f"cell_type must be a non-empty string, got {self.cell_type!r}")
        shape = self.feature_shape
        if not isinstance(shape, (tuple, list)) or len(shape) not in (1, 2):
            raise ValueError(f"feature_shape must be (D,) or (L, D), got {shape!r}")
        shape = tuple(integer(f"feature_shape[{axis}]", size) for axis, size in enumerate(shape))
        object.__setattr__(self, "feature_shape", shape)
        for name in ("wordvec_dim", "hidden_dim", "vocab_size"):
            object.__setattr__(self, name, integer(name, getattr(self, name)))
        try:
            dtype = np.dtype(self.dtype).name
        except TypeError:
            dtype = repr(self.dtype)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        object.__setattr__(self, "dtype", dtype)
        if self.attention is None:
            if self.attention_dim is not None:
                raise ValueError("attention_dim is given but attention is None")
            return
        if not isinstance(self.attention, str) or not self.attention:
            raise ValueError(f"attention must be the name of an attention mechanism or None, got {self.attention!r}")
        if len(shape) != 2:
            raise ValueError(f"attention {self.attention!r} needs a grid of features, feature_shape (L, D), got "
                             f"{shape}")
        attention_dim = self.hidden_dim if self.attention_dim is None else self.attention_dim
        object.__setattr__(self, "attention_dim", integer("attention_dim", attention_dim))

    # ------------------------------------------------------------------ sizes
    @property
    def feature_dim(self):
        """D: the width of one feature vector (of the pooled vector, or of each grid region)."""
        return self.feature_shape[-1]

    @property
    def numpy_dtype(self):
        """The numpy scalar type of the parameters (np.float32 or np.float64)."""
        return np.dtype(self.dtype).type

    def conditioning(self, ops=None):
        """The conditioning part of this spec's model (:mod:`captionkit.conditioning`) on the backend's ``ops``
        (None: for its declaration only): a projection of the pooled vector, or of a grid's mean with the grid as
        the context when the model attends."""
        if len(self.feature_shape) == 1:
            return ImageProjection(self.feature_dim, self.hidden_dim, ops)
        return GridProjection(self.feature_dim, self.hidden_dim, ops, attends=self.attention is not None)

    def build_cell(self, backend="numpy", precision="fp32"):
        """The model's cell: the registry's ``cell_type``, wrapped by the attention mechanism when there is one
        (UnknownCellError / UnknownAttentionError name what is not registered), its products at ``precision``
        (:meth:`captionkit.cells.Cell.use_precision`: ValueError for a cell or mechanism that cannot)."""
        cell = get_cell(self.cell_type)(backend=backend)
        if self.attention is not None:
            cell = AttendedCell(cell, get_attention(self.attention)(), self.attention_dim, backend=backend)
        cell.use_precision(precision)
        return cell

    def parameter_shapes(self, cell):
        """``{name: shape}`` of every parameter of the model with ``cell`` (a Cell instance of this spec's
        cell_type, as :meth:`build_cell` makes it), in initialisation order, computed without allocating."""
        W, V = self.wordvec_dim, self.vocab_size
        conditioning = self.conditioning()
        shapes = {"W_embed": (V, W)}
        shapes.update({name: tuple(param.shape) for name, param in conditioning.parameters().items()})
        sizes = self.cell_sizes(conditioning.context_dim)
        cell_shapes = {name: tuple(param.shape) for name, param in cell.parameters_for(sizes).items()}
        clash = set(cell_shapes) & set(MODEL_PARAMS)
        if clash:
            raise ValueError(f"cell {cell.name!r} declares parameters that clash with the model's: {sorted(clash)}")
        shapes.update(cell_shapes)
        shapes.update({"W_vocab": (self.hidden_dim, V), "b_vocab": (V,)})
        return shapes

    def cell_sizes(self, context_dim=None):
        """The sizes a cell of this model sees (:class:`captionkit.cells.CellSizes`), with the conditioning's
        per-step context width (None: no context)."""
        return CellSizes(self.wordvec_dim, self.hidden_dim, self.feature_dim, context_dim)

    def plugins(self):
        """The plugins this spec's model is made of, for messages: ``cell 'rnn'`` or ``cell 'rnn' and attention
        'soft'``."""
        return f"cell {self.cell_type!r}" + ("" if self.attention is None else f" and attention {self.attention!r}")

    def describe(self):
        """The spec in a sentence for messages: ``cell 'rnn' with input_dim=16, wordvec_dim=8, hidden_dim=12 and
        30 words`` (a grid spec names its feature_shape instead of input_dim)."""
        features = (f"input_dim={self.feature_dim}" if len(self.feature_shape) == 1
                    else f"feature_shape={self.feature_shape}")
        attention = ("" if self.attention is None
                     else f" and {self.attention!r} attention (attention_dim={self.attention_dim})")
        return (f"cell {self.cell_type!r}{attention} with {features}, wordvec_dim={self.wordvec_dim}, "
                f"hidden_dim={self.hidden_dim} and {self.vocab_size} words")

    # ------------------------------------------------------------------ the checkpoint record
    def to_meta(self):
        """The checkpoint's ``model`` record: cell_type, input_dim (D), wordvec_dim, hidden_dim, dtype, and for a
        grid spec also ``feature_shape``. The vocabulary size is not in it: the checkpoint stores the words."""
        meta = {"cell_type": self.cell_type, "input_dim": self.feature_dim, "wordvec_dim": self.wordvec_dim,
                "hidden_dim": self.hidden_dim, "dtype": self.dtype}
        if len(self.feature_shape) > 1:
            meta["feature_shape"] = list(self.feature_shape)
        if self.attention is not None:
            meta.update(attention=self.attention, attention_dim=self.attention_dim)
        return meta

    @classmethod
    def from_meta(cls, meta, vocab_size, where):
        """The spec a checkpoint's ``model`` record (and its vocabulary's size) describes; ValueError naming
        ``where`` (the file) and the key ``model.KEY`` at fault."""
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: 'meta' has no 'model' object")
        for key, kind in _META_FIELDS.items():
            value = meta.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
                expected = "an integer >= 1" if kind is int else "a string"
                raise ValueError(f"{where}: meta 'model.{key}' is {value!r}, expected {expected}")
        if meta["dtype"] not in DTYPES:
            raise ValueError(f"{where}: meta 'model.dtype' is {meta['dtype']!r}, expected float32 or float64")
        shape = meta.get("feature_shape", [meta["input_dim"]])
        if (not isinstance(shape, list) or len(shape) not in (1, 2) or shape[-1] != meta["input_dim"]
                or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in shape)):
            raise ValueError(f"{where}: meta 'model.feature_shape' is {shape!r}, expected [D] or [L, D] with D the "
                             f"input_dim ({meta['input_dim']})")
        attention, attention_dim = meta.get("attention"), meta.get("attention_dim")
        if attention is not None and (not isinstance(attention, str) or not isinstance(attention_dim, int)
                                      or isinstance(attention_dim, bool) or attention_dim < 1):
            raise ValueError(f"{where}: meta 'model.attention' is {attention!r} with 'model.attention_dim' "
                             f"{attention_dim!r}, expected a mechanism's name and an integer >= 1")
        try:
            return cls(cell_type=meta["cell_type"], feature_shape=tuple(shape), wordvec_dim=meta["wordvec_dim"],
                       hidden_dim=meta["hidden_dim"], vocab_size=vocab_size, dtype=meta["dtype"],
                       attention=attention, attention_dim=attention_dim)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    # ------------------------------------------------------------------ fitting data
    def check_features(self, features):
        """``features`` (N, *feature_shape) as a C-contiguous array of this spec's dtype; ValueError naming the
        expected shape, TypeError for non-numeric values."""
        features = np.asarray(features)
        if features.shape[1:] != self.feature_shape:
            expected = ", ".join(["N", *map(str, self.feature_shape)])
            raise ValueError(f"features must have shape ({expected}), got {features.shape}")
        if not np.issubdtype(features.dtype, np.number):
            raise TypeError(f"features must be numeric, got dtype {features.dtype}")
        return np.ascontiguousarray(features, dtype=self.dtype)

    def fits(self, other=None, feature_shape=None, words=None, own_words=None, *, model="the model",
             data="the dataset", features="the features", wanted="this run"):
        """Raise :class:`SpecMismatch` naming the first difference between this model and what it is asked to
        work with; the message names the parties as the caller calls them (``model``: this spec's holder, e.g.
        "the checkpoint"; ``data``: the dataset; ``features``: where ``feature_shape`` comes from; ``wanted``: who
        asks for ``other``), and callers prefix the file and add what to do about it.

        Checked in this order: ``other``, the spec a run asks for (every field but the vocabulary size, which
        ``words`` checks in full); ``words`` and ``own_words``, the data's and the model's vocabulary (id -> word
        sequences); ``feature_shape``, one image's features' shape in the data (``features.shape[1:]``).
        """
        if other is not None:
            for name, mine, theirs in (("cell_type", self.cell_type, other.cell_type),
                                       ("wordvec_dim", self.wordvec_dim, other.wordvec_dim),
                                       ("hidden_dim", self.hidden_dim, other.hidden_dim),
                                       ("dtype", self.dtype, other.dtype),
                                       ("input_dim", self.feature_dim, other.feature_dim),
                                       ("feature_shape", self.feature_shape, other.feature_shape),
                                       ("attention", self.attention, other.attention),
                                       ("attention_dim", self.attention_dim, other.attention_dim)):
                if mine != theirs:
                    raise SpecMismatch(f"{model} has {name}={mine!r}, but {wanted} needs {name}={theirs!r}",
                                       name, mine, theirs)
        if words is not None and list(words) != list(own_words):
            words, own_words = list(words), list(own_words)
            if len(words) != len(own_words):
                detail = f"{len(own_words)} words in {model}, {len(words)} in {data}"
            else:
                i = next(i for i, (a, b) in enumerate(zip(words, own_words)) if a != b)
                detail = f"word {i} is {own_words[i]!r} in {model} but {words[i]!r} in {data}"
            raise SpecMismatch(f"{data}'s vocabulary differs from {model}'s ({detail})", "vocabulary",
                               len(own_words), len(words))
        if feature_shape is not None and tuple(feature_shape) != self.feature_shape:
            found = tuple(feature_shape)
            if len(found) == len(self.feature_shape) == 1:
                message = f"{features} have width {found[0]} but {model} takes {self.feature_dim}"
            else:
                message = f"{features} have shape {found} per image but {model} takes {self.feature_shape}"
            raise SpecMismatch(message, "feature_shape", self.feature_shape, found)
