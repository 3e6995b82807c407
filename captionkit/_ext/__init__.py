"""Compiled kernels (private; the public, checked API is captionkit.kernels).

On import, binds the BLAS that the kernels' matrix products use (see _blas.pyx): OpenBLAS from the scipy-openblas32
wheel when it is installed, else scipy's; and notes whether that OpenBLAS runs AVX-512 kernels (the packed panels
take every product where it does not). Import fails, so captionkit falls back to its numpy reference, when neither
can be had. The scipy-openblas32 copy is then set to one thread: captionkit.parallel runs shards of a batch on as
many threads as that OpenBLAS was configured with (``configured_blas_threads``), each shard's products on one core.
"""
import ctypes
import importlib.util
import os
from pathlib import Path

from captionkit._ext import _blas

_library = None  # the privately loaded OpenBLAS, kept alive for the life of the process
configured_blas_threads = None  # its thread count before captionkit set it to 1; None for scipy's BLAS


def _scipy_openblas32():
    """Addresses of sgemm_/dgemm_ in scipy-openblas32's library, loaded without importing its package (which would
    load it RTLD_GLOBAL), or None when it is not installed."""
    global _library
    spec = importlib.util.find_spec("scipy_openblas32")
    if os.name != "posix" or spec is None or not spec.submodule_search_locations:
        return None
    candidates = sorted((Path(spec.submodule_search_locations[0]) / "lib").glob("libscipy_openblas*.so"))
    if not candidates:
        return None
    _library = ctypes.CDLL(str(candidates[0]), mode=os.RTLD_LOCAL | os.RTLD_NOW)
    symbols = ("scipy_sgemm_", "scipy_dgemm_")
    addresses = [ctypes.cast(getattr(_library, name), ctypes.c_void_p).value for name in symbols]
    corename = _library.scipy_openblas_get_corename
    corename.restype = ctypes.c_char_p
    core = corename().decode("ascii", "replace")
    return addresses, f"OpenBLAS from scipy-openblas32, {core} kernels ({candidates[0]})", core in _AVX512_CORES


def _scipy_cython_blas():
    """Addresses of sgemm/dgemm behind scipy.linalg.cython_blas (exported as capsules)."""
    from scipy.linalg import cython_blas

    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    capsules = [cython_blas.__pyx_capi__[name] for name in ("sgemm", "dgemm")]
    # Which kernels scipy's OpenBLAS runs is not asked: its products stay on it, as they always were.
    return [get_pointer(c, get_name(c)) for c in capsules], "scipy.linalg.cython_blas", True


# OpenBLAS's names of its kernel sets with AVX-512 (scipy_openblas_get_corename).
_AVX512_CORES = {"SkylakeX", "Cooperlake", "SapphireRapids"}
(_sgemm, _dgemm), _source, _avx512 = _scipy_openblas32() or _scipy_cython_blas()
_blas.bind(_sgemm, _dgemm, _source, _avx512)
if _library is not None:
    configured_blas_threads = max(1, int(_library.scipy_openblas_get_num_threads()))
    _library.scipy_openblas_set_num_threads(1)
