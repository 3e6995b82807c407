"""Compiled LSTM sequence forward/backward, with the signatures of :mod:`captionkit_lstm.layers`.

This module is the one door to the private extension ``_loops``: it checks shapes and dtypes and makes arrays
C-contiguous in one float dtype (float32 or float64) before any compiled code sees them. The input projection is
hoisted out of the time loop and the weight gradients are large products after the backward loop. The loops run on
what captionkit's own compiled kernels give plugins: their BLAS (``BLAS`` says which), so a training step uses one
thread pool; on CPUs with AVX-512 their packed-panel products for the per-step h @ Wh; and their vectorised sigmoid
and tanh for the gates.
"""
from typing import NamedTuple

import numpy as np

__all__ = ["LSTMCache", "is_available", "lstm_forward", "lstm_backward"]


def _use_captionkit_kernels(loops):
    """Bind the loops to the products and activations of captionkit's compiled kernels
    (``captionkit.kernels.blas_functions`` and ``vector_functions``) and return a description of the BLAS used.

    Every BLAS copy in a process has its own thread pool, whose idle workers spin: an LSTM on scipy's copy inside a
    model on captionkit's made a two-thread training step about ten times slower than one thread. Without
    captionkit's kernels built, the loops keep ``scipy.linalg.cython_blas`` and libm.
    """
    from captionkit import kernels

    if not kernels.is_available():
        return "scipy.linalg.cython_blas"
    blas = kernels.blas_functions()
    loops.use_blas(blas["sgemm"], blas["dgemm"])
    if blas["panel"] is not None:
        loops.use_panel_functions(blas["panel"])
    loops.use_vector_functions(kernels.vector_functions())
    return blas["description"]


try:
    from captionkit_lstm import _loops
except ImportError as exc:  # an unbuilt source checkout: the numpy reference still works
    _loops = None
    _IMPORT_ERROR = exc
    BLAS = None
else:
    _IMPORT_ERROR = None
    BLAS = _use_captionkit_kernels(_loops)  # which BLAS the compiled loops call

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def is_available():
    """True when the compiled extension is built and imports."""
    return _loops is not None


def _require_loops():
    if _loops is None:
        raise RuntimeError(
            "the compiled LSTM loops of captionkit-lstm are not built "
            f"({_IMPORT_ERROR}); reinstall with `pip install plugins/captionkit-lstm` or use backend 'numpy'"
        )
    return _loops


class LSTMCache(NamedTuple):
    """What :func:`lstm_forward` keeps for :func:`lstm_backward`: its C-contiguous inputs, the activated gates
    (N, T, 4H) in the order i, f, o, g, and the cell states, their tanh and the hidden states (N, T, H)."""

    x: np.ndarray
    h0: np.ndarray
    Wx: np.ndarray
    Wh: np.ndarray
    gates: np.ndarray
    c: np.ndarray
    tanh_c: np.ndarray
    h: np.ndarray


def _common_dtype(**arrays):
    """float64 if any array is float64, else float32; anything but those two is an error naming the array."""
    for name, array in arrays.items():
        if array.dtype not in _FLOATS:
            raise TypeError(f"lstm: arrays must be float32 or float64, got {name} {array.dtype}")
    return np.result_type(*arrays.values())


def _check_blas_sizes(*sizes):
    """BLAS counts in 32-bit integers: refuse (rather than overflow) arrays of 2**31 elements or more."""
    if max(sizes) >= 2**31:
        raise ValueError(f"lstm: arrays of {max(sizes)} elements are too large for the compiled loops "
                         "(limit 2**31 - 1)")


def _as(array, dtype):
    return np.ascontiguousarray(array, dtype=dtype)


def lstm_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,) -> h (N, T, H), cache; c0 is zero."""
    loops = _require_loops()
    x, h0, Wx, Wh, b = (np.asarray(a) for a in (x, h0, Wx, Wh, b))
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"lstm: x must be (N, T, D) with no size 0, got shape {x.shape}")
    N, T, D = x.shape
    if h0.ndim != 2 or h0.shape[0] != N or h0.shape[1] == 0:
        raise ValueError(f"lstm: h0 must be (N, H) with N={N} from x and H >= 1, got shape {h0.shape}")
    H = h0.shape[1]
    for name, array, shape in (("Wx", Wx, (D, 4 * H)), ("Wh", Wh, (H, 4 * H)), ("b", b, (4 * H,))):
        if array.shape != shape:
            raise ValueError(f"lstm: {name} must have shape {shape} for D={D}, H={H}, got {array.shape}")
    dtype = _common_dtype(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)
    x, h0, Wx, Wh, b = (_as(a, dtype) for a in (x, h0, Wx, Wh, b))

    _check_blas_sizes(N * T * max(D, 4 * H), D * 4 * H, H * 4 * H)
    gates = np.empty((N, T, 4 * H), dtype=dtype)
    loops.input_projection(x.reshape(N * T, D), Wx, b, gates.reshape(N * T, 4 * H))  # hoisted out of the loop
    h = np.empty((N, T, H), dtype=dtype)
    c = np.empty((N, T, H), dtype=dtype)
    tanh_c = np.empty((N, T, H), dtype=dtype)
    loops.forward_loop(gates, h0, np.zeros_like(h0), Wh, h, c, tanh_c)
    return h, LSTMCache(x, h0, Wx, Wh, gates, c, tanh_c, h)


def lstm_backward(dh, cache):
    """dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,)."""
    loops = _require_loops()
    if not isinstance(cache, LSTMCache):
        raise TypeError(f"lstm: cache must be the LSTMCache that kernels.lstm_forward returned, got {type(cache)}")
    x, h0, Wx, Wh, gates, c, tanh_c, h = cache
    dh = np.asarray(dh)
    if dh.shape != h.shape:
        raise ValueError(f"lstm: dh must have the shape of the forward output {h.shape}, got {dh.shape}")
    if dh.dtype not in _FLOATS:
        raise TypeError(f"lstm: dh must be float32 or float64, got {dh.dtype}")
    dh = _as(dh, h.dtype)
    N, T, H = h.shape
    D = x.shape[2]

    da = np.empty_like(gates)
    dh0 = np.zeros((N, H), dtype=h.dtype)
    dc_scratch = np.zeros((N, H), dtype=h.dtype)
    loops.backward_loop(dh, gates, c, tanh_c, Wh, da, dh0, dc_scratch)

    prev_h = np.concatenate([h0[:, None, :], h[:, :-1, :]], axis=1)  # h_{t-1} for every t
    dx = np.empty_like(x)
    dWx, dWh, db = np.empty_like(Wx), np.empty_like(Wh), np.empty(4 * H, dtype=h.dtype)
    loops.weight_gradients(da.reshape(N * T, 4 * H), x.reshape(N * T, D), prev_h.reshape(N * T, H), Wx,
                           dx.reshape(N * T, D), dWx, dWh, db)
    return dx, dh0, dWx, dWh, db
