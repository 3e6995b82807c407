"""The BLAS that every kernel's matrix products go through, bound once when captionkit._ext is imported.

captionkit._ext/__init__.py binds OpenBLAS from the scipy-openblas32 wheel when it is installed, loaded privately
(RTLD_LOCAL, so its symbols never shadow scipy's own copy of OpenBLAS): its single-precision products on the skinny
matrices of a time step run 20-40% faster than those of the OpenBLAS that scipy 1.17 bundles. Otherwise it binds
scipy's (``scipy.linalg.cython_blas``). Only the Fortran-interface sgemm_/dgemm_ are used, so any BLAS with that ABI
fits. No kernel module can run before the binding: importing one imports captionkit._ext first.
"""
from captionkit._ext._panel cimport ck_panel_available

cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL
_description = None


cdef sgemm_t sgemm_function() noexcept nogil:
    return _sgemm


cdef dgemm_t dgemm_function() noexcept nogil:
    return _dgemm


def bind(size_t sgemm_address, size_t dgemm_address, str description):
    """Use the Fortran-ABI sgemm_/dgemm_ at these addresses from now on (the caller keeps their library loaded)."""
    global _sgemm, _dgemm, _description
    if sgemm_address == 0 or dgemm_address == 0:
        raise ValueError("bind: null function address")
    _sgemm = <sgemm_t> sgemm_address
    _dgemm = <dgemm_t> dgemm_address
    _description = description


def description():
    """Which BLAS the kernels use."""
    return _description


cdef bint _use_panel = ck_panel_available()


cdef bint panel_enabled() noexcept nogil:
    return _use_panel


def use_panel(bint flag):
    """Run the time loops' per-step products on packed panels (when the CPU allows) or on BLAS; returns the
    previous choice. For tests and benchmarks, which compare the two paths."""
    global _use_panel
    previous = _use_panel
    _use_panel = flag and ck_panel_available()
    return previous
