"""Choosing between the numpy reference and the compiled kernels, in one place.

``auto`` (the default) takes the compiled kernels when they are built and the numpy reference otherwise; the
environment variable ``CAPTIONKIT_BACKEND`` (``auto``, ``numpy`` or ``cython``) sets the default for a whole process.
:func:`runtime` gives what a backend runs: its layer functions (:mod:`captionkit.layers` or :mod:`captionkit.kernels`,
which share their signatures), how a batch is cut up and its parts run side by side, and the update rules; the
model, its cells and the solver ask it and never branch on the backend themselves. A runtime also has a precision
(:mod:`captionkit.precision`): at "bf16" its layer functions are the backend's with ``precision="bf16"`` bound into
each that multiplies matrices (:data:`PRECISION_FUNCTIONS`), so nothing above this module passes a precision to a
layer function.
"""
import functools
import os
import types

from captionkit import parallel
from captionkit.precision import check_precision

__all__ = ["BACKENDS", "PRECISION_FUNCTIONS", "Runtime", "check_runs", "compiled_available", "ops", "resolve_backend",
           "runtime"]

BACKENDS = ("auto", "numpy", "cython")
ENV_VAR = "CAPTIONKIT_BACKEND"
# The layer functions (of captionkit.layers and captionkit.kernels alike) whose matrix products follow a keyword
# ``precision``; every other function has no product of the model's arrays and runs as it is.
PRECISION_FUNCTIONS = ("affine_forward", "affine_backward", "temporal_softmax_affine_loss",
                       "temporal_softmax_affine_nll", "affine_argmax", "affine_log_softmax_topk", "affine_sample",
                       "gated_forward", "gated_backward", "gated_step", "gated_greedy_decode")


def compiled_available():
    """True when the compiled kernels in ``captionkit._ext`` are built and import."""
    try:
        from captionkit import kernels
    except ImportError:
        return False
    return kernels.is_available()


def resolve_backend(requested=None):
    """Turn ``requested`` (None, ``auto``, ``numpy`` or ``cython``) into the backend to use: ``numpy`` or ``cython``.

    None means the ``CAPTIONKIT_BACKEND`` environment variable, or ``auto`` when it is unset. Asking for ``cython``
    when the extension is not built is an error rather than a silent fallback, so benchmarks never measure the
    wrong thing.
    """
    source = "argument backend"
    if requested is None:
        requested = os.environ.get(ENV_VAR, "auto") or "auto"
        source = f"environment variable {ENV_VAR}"
    requested = str(requested).lower()
    if requested not in BACKENDS:
        raise ValueError(f"{source}={requested!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    if requested == "numpy":
        return "numpy"
    if compiled_available():
        return "cython"
    if requested == "cython":
        raise RuntimeError(
            f"{source} asks for the compiled 'cython' backend, but captionkit._ext is not built in this "
            "installation; reinstall with `pip install .` (needs a C compiler) or use backend 'numpy'"
        )
    return "numpy"


def ops(backend, precision="fp32"):
    """The layer functions of ``backend`` (``numpy`` or ``cython``) at ``precision``: :mod:`captionkit.layers` or
    :mod:`captionkit.kernels`, with the same names and signatures (see :func:`runtime`)."""
    return runtime(backend, precision).ops


def _bound_precision(module, precision):
    """A namespace of ``module``'s public functions with ``precision`` bound into those of PRECISION_FUNCTIONS
    that it has (the numpy reference has no fused greedy decoder)."""
    names = {name: getattr(module, name) for name in module.__all__}
    for name in PRECISION_FUNCTIONS:
        if name in names:
            names[name] = functools.partial(names[name], precision=precision)
    return types.SimpleNamespace(**names)


class Runtime:
    """What a resolved backend runs at a precision: ``ops`` (the layer functions), :meth:`map_rows` (how a batch
    is cut up), :meth:`run` (how its parts' results are combined side by side), :meth:`update_rule` (the
    optimiser's arithmetic) and :meth:`prepare` (once per model)."""

    def __init__(self, name, precision="fp32"):
        if name not in ("numpy", "cython"):
            raise ValueError(f"backend must be 'numpy' or 'cython' (see resolve_backend), got {name!r}")
        self.name, self.precision = name, check_precision(precision)
        if name == "cython":
            from captionkit import kernels as module
        else:
            from captionkit import layers as module
        self.ops = module if precision == "fp32" else _bound_precision(module, precision)

    def prepare(self):
        """What a model does once when it is built on this backend. Compiled: keep freed memory for reuse (the
        compiled step's speed depends on it, captionkit.allocation), and start the threads (refusing a bad thread
        setting now rather than at the first step) with the BLAS libraries loaded by then (captionkit.parallel)."""
        if self.name == "cython":
            from captionkit import allocation

            allocation.keep_freed_memory()
            parallel.start()

    def map_rows(self, rows, task):
        """``[task(rows_slice), ...]`` over slices that cover ``range(rows)`` in order. Compiled: one shard per
        thread, run side by side on captionkit.parallel's threads (the kernels release the GIL); numpy: one slice,
        since numpy's own BLAS threads each product."""
        if self.name == "numpy":
            return [task(slice(0, rows))]
        return parallel.map_shards(rows, task)

    def run(self, tasks):
        """The results of ``tasks`` (functions of no argument), in order. Compiled: side by side on
        captionkit.parallel's threads; numpy: one after the other."""
        if self.name == "numpy":
            return [task() for task in tasks]
        return parallel.run(tasks)

    def update_rule(self, name):
        """The function of :mod:`captionkit.optim` that applies update rule ``name`` (a key of UPDATE_RULES):
        Adam in one compiled pass over all parameters on the compiled backend, the reference otherwise."""
        from captionkit import optim

        if name == "adam" and self.name == "cython":
            return optim.fused_adam
        return optim.UPDATE_RULES[name]


def check_runs(backend, precision):
    """RuntimeError, in one line, when ``backend`` cannot run ``precision`` on this CPU: the compiled bf16 products
    need AVX512-BF16 (asked each time, so a test can stand in for a CPU without it)."""
    if backend == "cython" and precision == "bf16":
        from captionkit import kernels

        if not kernels.bf16_available():
            raise RuntimeError("precision 'bf16' on the compiled backend needs a CPU with AVX512-BF16, which this "
                               "one lacks (`captionkit info`): use --backend numpy (or CAPTIONKIT_BACKEND=numpy) to "
                               "emulate it in numpy, slower (docs/precision.md), or --precision fp32")


def runtime(backend, precision="fp32"):
    """The :class:`Runtime` of ``backend`` (``numpy`` or ``cython``, as :func:`resolve_backend` returns) at
    ``precision`` (``fp32`` or ``bf16``, :data:`captionkit.precision.PRECISIONS`), one per pair: at "fp32" ``ops``
    is the backend's module itself; at "bf16" a namespace of its functions with ``precision="bf16"`` bound into
    :data:`PRECISION_FUNCTIONS`. The compiled backend at "bf16" needs AVX512-BF16 (:func:`check_runs`)."""
    check_runs(backend, precision)
    return _runtime(backend, precision)


@functools.cache
def _runtime(backend, precision):
    return Runtime(backend, precision)
