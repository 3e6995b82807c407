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


def bind(size_t sgemm_address, size_t dgemm_address, str description, bint avx512_kernels):
    """Use the Fortran-ABI sgemm_/dgemm_ at these addresses from now on (the caller keeps their library loaded).

    ``avx512_kernels``: whether that BLAS runs AVX-512 kernels. Where it does not (OpenBLAS told
    ``OPENBLAS_CORETYPE=Haswell``, or a CPU it does not know) and the packed panels do, the panels are 1.5-1.8x
    faster on every product of a step (docs/benchmarks.md), so every product goes to them.
    """
    global _sgemm, _dgemm, _description, _large_on_panels
    if sgemm_address == 0 or dgemm_address == 0:
        raise ValueError("bind: null function address")
    _sgemm = <sgemm_t> sgemm_address
    _dgemm = <dgemm_t> dgemm_address
    _description = description
    _large_on_panels = ck_panel_available() and not avx512_kernels


def description():
    """Which BLAS the kernels use."""
    return _description


cdef bint _use_panel = ck_panel_available()
cdef bint _large_on_panels = False  # set by bind()


cdef bint panel_enabled() noexcept nogil:
    return _use_panel


cdef bint large_on_panels() noexcept nogil:
    return _large_on_panels


def use_panel(bint step, bint large):
    """Run the time loops' per-step products (``step``) and every other product (``large``) on packed panels, where
    the CPU allows, or on BLAS; returns the previous (step, large). For tests and benchmarks, which compare the
    paths."""
    global _use_panel, _large_on_panels
    previous = (_use_panel, _large_on_panels)
    _use_panel = step and ck_panel_available()
    _large_on_panels = large and ck_panel_available()
    return previous


def panel_use():
    """(step, large): whether the per-step products and the other products run on packed panels now."""
    return _use_panel, _large_on_panels
