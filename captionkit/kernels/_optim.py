"""Adam in C: one pass over memory per parameter, in place, on the threads of the caller's choosing."""
import numpy as np

from captionkit.checks import integer, number
from captionkit.kernels._built import _require_built, is_available
from captionkit.kernels._checks import _expect_shape, _float_array

if is_available():  # else every kernel stops at _require_built()
    from captionkit._ext import _optim

__all__ = ["adam_update", "adam_update_many"]

_ADAM_SLICE = 1 << 16  # elements below which a thread would cost more than it saves


def adam_update(w, dw, m, v, t, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, *, map_shards=None):
    """One Adam step in place with the arithmetic of :func:`captionkit.optim.adam`; returns None.

    w, dw, m, v: arrays of one shape and dtype, C-contiguous, not overlapping (w, m and v writeable); m and v are
    the moment estimates (zeros before the first step); t is the number of this update, counting from 1. One pass
    over memory instead of the reference's dozen array temporaries. ``map_shards`` runs it on threads:
    :func:`captionkit.parallel.map_shards` (or a function of the same signature) cuts the elements into one slice
    per thread when the arrays are large; without it, one call updates them all on this thread. For all of a
    model's parameters at once, :func:`adam_update_many` is faster.
    """
    _require_built()
    groups = [_adam_arrays(w, dw, m, v, ("w", "dw", "m", "v"))]
    _adam_in_slices(groups, _adam_hyperparameters(t, learning_rate, beta1, beta2, epsilon), map_shards)


def adam_update_many(ws, dws, ms, vs, t, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, *,
                     map_shards=None):
    """:func:`adam_update` on many arrays in one call: ``ws[i], dws[i], ms[i], vs[i]`` are the w, dw, m, v there,
    for every i, with one t and one set of hyperparameters; returns None.

    ws, dws, ms, vs: sequences of one length; the arrays of one i share a shape, all arrays share a dtype, and no
    array may overlap another. The same arithmetic as one :func:`adam_update` per i, but with ``map_shards`` the
    threads are dispatched once and share out the elements of all the arrays together (docs/benchmarks.md measures
    the difference); :func:`captionkit.optim.update_all` calls it so.
    """
    _require_built()
    lists = {"ws": ws, "dws": dws, "ms": ms, "vs": vs}
    for name, value in lists.items():
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple of arrays, got {type(value).__name__}")
    if len({len(value) for value in lists.values()}) != 1:
        raise ValueError("ws, dws, ms and vs must have one length, got "
                         + ", ".join(f"{len(value)} ({name})" for name, value in lists.items()))
    if not ws:
        raise ValueError("ws is empty: no arrays to update")
    groups = []
    for i, arrays in enumerate(zip(ws, dws, ms, vs)):
        names = tuple(f"{name}[{i}]" for name in lists)
        groups.append(_adam_arrays(*arrays, names, like=groups[0] if groups else None))
    _adam_in_slices(groups, _adam_hyperparameters(t, learning_rate, beta1, beta2, epsilon), map_shards)


def _adam_arrays(w, dw, m, v, names, like=None):
    """Checked, flattened (name, array) pairs of one Adam update; ``like``: a group whose dtype it must share."""
    w = _float_array(names[0], w, w.ndim if isinstance(w, np.ndarray) else 1, like and like[0], writeable=True)
    group = [(names[0], w)]
    for name, a, writeable in zip(names[1:], (dw, m, v), (False, True, True)):
        a = _float_array(name, a, w.ndim, group[0], writeable)
        _expect_shape(name, a, w.shape, names[0])
        group.append((name, a))
    return [(name, a.reshape(-1)) for name, a in group]


def _adam_hyperparameters(t, learning_rate, beta1, beta2, epsilon):
    """Checked (learning_rate, beta1, beta2, epsilon, c1, c2) with the bias corrections c1, c2 of step t."""
    t = integer("t", t)
    learning_rate = number("learning_rate", learning_rate)
    beta1 = number("beta1", beta1, below=1.0)
    beta2 = number("beta2", beta2, below=1.0)
    epsilon = number("epsilon", epsilon)
    c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
    if c1 == 0.0 or c2 == 0.0:
        raise ValueError(f"beta1={beta1}, beta2={beta2} give a zero bias correction at t={t}")
    return learning_rate, beta1, beta2, epsilon, c1, c2


def _adam_in_slices(groups, hyperparameters, map_shards):
    """Adam on every group (w, dw, m, v), the elements of all groups laid end to end and cut by ``map_shards``
    (``map_shards(size, task, min_rows)`` calls ``task`` on slices that cover ``range(size)``) into one run of
    slices per thread; without it, one run over them all."""
    # Position 1 of a group is dw, the one array Adam only reads.
    _refuse_overlaps([(name, a, position != 1) for group in groups for position, (name, a) in enumerate(group)])
    sizes = [group[0][1].size for group in groups]
    offsets = np.cumsum([0] + sizes)

    def update(part):
        # part: a range of the groups' elements laid end to end; each group it touches gets one compiled call.
        for g, group in enumerate(groups):
            lo, hi = max(part.start, offsets[g]), min(part.stop, offsets[g + 1])
            if lo < hi:
                piece = slice(lo - offsets[g], hi - offsets[g])
                _optim.adam_update(*[a[piece] for _, a in group], *hyperparameters)

    size = int(offsets[-1])
    if map_shards is None:
        update(slice(0, size))
    else:  # memory-bound, so large arrays go faster in slices on all the threads
        map_shards(size, update, min_rows=_ADAM_SLICE)


def _refuse_overlaps(arrays):
    """ValueError naming two of ``arrays`` (name, array, written) that share memory where one of them is written.
    Every array is C-contiguous, so its bytes are one interval."""
    spans = sorted((a.__array_interface__["data"][0], a.nbytes, written, name) for name, a, written in arrays)
    reach, reach_name, reach_written = -1, None, False  # the interval seen so far that ends furthest to the right
    for start, nbytes, written, name in spans:
        if start < reach and (written or reach_written):
            raise ValueError(f"{reach_name} and {name} overlap in memory; Adam needs separate arrays")
        if start + nbytes > reach:
            reach, reach_name, reach_written = start + nbytes, name, written
