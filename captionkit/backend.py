"""Choosing between the numpy reference and the compiled kernels.

``auto`` (the default) takes the compiled kernels when they are built and the numpy reference otherwise; the
environment variable ``CAPTIONKIT_BACKEND`` (``auto``, ``numpy`` or ``cython``) sets the default for a whole process.
"""
import os

__all__ = ["BACKENDS", "compiled_available", "resolve_backend"]

BACKENDS = ("auto", "numpy", "cython")
ENV_VAR = "CAPTIONKIT_BACKEND"


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
