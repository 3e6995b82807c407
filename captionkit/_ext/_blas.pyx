"""The BLAS that every kernel's matrix products go through, bound once when captionkit._ext is imported.

captionkit._ext/__init__.py binds OpenBLAS from the scipy-openblas32 wheel when it is installed, loaded privately
(RTLD_LOCAL, so its symbols never shadow scipy's own copy of OpenBLAS): its single-precision products on the skinny
matrices of a time step run 20-40% faster than those of the OpenBLAS that scipy 1.17 bundles. Otherwise it binds
scipy's (``scipy.linalg.cython_blas``). Only the Fortran-interface sgemm_/dgemm_ are used, so any BLAS with that ABI
fits. No kernel module can run before the binding: importing one imports captionkit._ext first.
"""
from captionkit._ext._panel cimport (ck_panel_available, ck_packed_size_f, ck_packed_size_d, ck_pack_f, ck_pack_d,
                                     ck_panel_gemm_f, ck_panel_gemm_d)

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


def addresses():
    """(sgemm_, dgemm_) addresses of the bound BLAS."""
    return <size_t> _sgemm, <size_t> _dgemm


# The packed-panel products of _panel.h, given addresses with a C ABI for plugins' compiled loops (see
# captionkit.kernels.blas_functions), and the switch between them and BLAS that every time loop reads.

cdef Py_ssize_t _packed_size_s(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    return ck_packed_size_f(k, n)


cdef Py_ssize_t _packed_size_d(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    return ck_packed_size_d(k, n)


cdef void _pack_s(Py_ssize_t k, Py_ssize_t n, const float *b, Py_ssize_t ldb, int trans, float *bp) noexcept nogil:
    ck_pack_f(k, n, b, ldb, trans, bp)


cdef void _pack_d(Py_ssize_t k, Py_ssize_t n, const double *b, Py_ssize_t ldb, int trans, double *bp) noexcept nogil:
    ck_pack_d(k, n, b, ldb, trans, bp)


cdef void _panel_sgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda, float *bp, float *c,
                       Py_ssize_t ldc) noexcept nogil:
    ck_panel_gemm_f(m, n, k, a, lda, bp, c, ldc)


cdef void _panel_dgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double *a, Py_ssize_t lda, double *bp,
                       double *c, Py_ssize_t ldc) noexcept nogil:
    ck_panel_gemm_d(m, n, k, a, lda, bp, c, ldc)


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


def panel_addresses():
    """Addresses of the packed-panel functions by name, or None when this CPU or build lacks them (no AVX-512)."""
    if not ck_panel_available():
        return None
    return {
        "packed_size_s": <size_t> _packed_size_s, "packed_size_d": <size_t> _packed_size_d,
        "pack_s": <size_t> _pack_s, "pack_d": <size_t> _pack_d,
        "panel_sgemm": <size_t> _panel_sgemm, "panel_dgemm": <size_t> _panel_dgemm,
    }
