"""Whether the compiled extension is built, and which BLAS it bound: asked before every kernel runs."""
try:
    from captionkit import _ext
    # Every extension module, so that is_available() means each kernel's module imports.
    from captionkit._ext import (  # noqa: F401
        _affine, _attend, _bf16, _blas, _cpu, _decode, _embedding, _engine, _optim, _rnn, _softmax, pointwise,
    )
except ImportError as exc:  # not built: the numpy reference still works
    _IMPORT_ERROR = exc
else:
    _IMPORT_ERROR = None


def is_available():
    """True when the compiled extension modules are built and import."""
    return _IMPORT_ERROR is None


def _require_built():
    """RuntimeError saying how to get the compiled kernels, unless they are built."""
    if _IMPORT_ERROR is not None:
        raise RuntimeError(
            "captionkit's compiled kernels are not built in this installation "
            f"({_IMPORT_ERROR}); reinstall with `pip install .` (needs a C compiler)"
        )


def blas():
    """Which BLAS the kernels' matrix products use (a description, for reports)."""
    _require_built()
    return _blas.description()


def blas_threads():
    """How many threads the kernels' OpenBLAS was configured with (before captionkit set it to one per call): the
    default number of shards of :mod:`captionkit.parallel` (which reads it from the compiled leaf itself);
    None for a BLAS whose threads captionkit does not control."""
    _require_built()
    return _ext.configured_blas_threads
