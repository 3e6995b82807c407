"""The argument checks of every kernel, so that nothing reaches the compiled code unchecked (see the conventions in
:mod:`captionkit.kernels`); integer and real arguments go through :mod:`captionkit.checks`, as everywhere else."""
import math

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_ELEMENTS = 2**31 - 1  # BLAS counts in 32-bit integers


def _check_size(name, shape):
    if math.prod(shape) > _MAX_ELEMENTS:
        raise ValueError(f"{name} would have shape {tuple(shape)}, {math.prod(shape)} elements: more than 2**31 - 1")


def _float_array(name, a, ndim, like=None, writeable=False):
    """Check a floating argument; ``like`` is ``(name, array)`` of an argument whose dtype it must share."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if like is not None and a.dtype != like[1].dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but {like[0]} has {like[1].dtype}; one call takes one dtype")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} has an empty dimension: shape {a.shape}")
    _check_size(name, a.shape)
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray); got strides {a.strides}")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} is read-only, but this call updates it in place")
    return a


def _expect_shape(name, a, shape, source):
    """``a`` must have ``shape``, which the arguments named in ``source`` determine."""
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (from {source}), got {a.shape}")


def _ids(name, a, vocab_size, shape, source, within="the vocabulary"):
    """Ids in [0, vocab_size) of any integer dtype and layout -> a contiguous int64 copy, flattened: word ids, or
    with ``within`` naming what else they index (for the error), other rows.

    ``shape`` is the expected shape (None in it: any non-zero size), determined by the arguments in ``source``.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of integer ids, got {type(a).__name__}")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, got dtype {a.dtype}")
    if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
        expected = tuple("any" if want is None else want for want in shape)
        raise ValueError(f"{name} must have shape {expected} (from {source}), got {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} has an empty dimension: shape {a.shape}")
    _check_size(name, a.shape)
    bad = (a < 0) | (a >= vocab_size)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}{list(where)} = {a[where]} is outside {within} [0, {vocab_size})")
    return np.ascontiguousarray(a, dtype=np.int64).reshape(-1)


def _mask(name, a, shape, source):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy bool array, got {type(a).__name__}")
    if a.dtype != np.bool_:
        raise TypeError(f"{name} must have dtype bool, got {a.dtype}")
    _expect_shape(name, a, shape, source)
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _word_id(name, value, vocab_size):
    """An integer word id in [0, vocab_size)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer word id, got {value!r}")
    if not 0 <= value < vocab_size:
        raise ValueError(f"{name} must be a word id in [0, {vocab_size}) (from W_embed), got {value}")
    return int(value)


def _unpack(cache, length, producer):
    if not isinstance(cache, tuple) or len(cache) != length:
        raise TypeError(f"cache must be the tuple that {producer} returned")
    return cache

