"""The compiled pointwise part of a gated cell: the C signatures captionkit's recurrence engine calls, the vectorised
activations it offers, and the capsules that hand a cell's functions to it. Shipped with captionkit so that a
plugin's Cython module ``cimport``s it and the compiler checks every type (docs/cells.md has a worked example):

    from captionkit._ext.pointwise cimport pointwise_capsules, sigmoid, tanh

The engine runs a cell of G gate blocks and S state arrays (h first, then e.g. an LSTM's c), each of H units. At
every time step it computes, for all rows at once, ``a = x_t Wx + b`` and ``u = h_{t-1} Wh`` (summed cells get
``a = x_t Wx + b + h_{t-1} Wh`` and no u), then calls the cell's functions once per row:

forward(H, a, u, prev, next)
    a     K*H values, K >= G the cell's ``kept`` blocks: the first G*H hold the pre-activations; the function may
          overwrite all K*H with what its backward needs (activated gates, say): the engine keeps them per step.
    u     G*H recurrent pre-activations, read-only; NULL for summed cells.
    prev  S pointers to the state at t-1 (H values each), read-only.
    next  S pointers to the state at t, to be written.

backward(H, a, u, prev, next, dstate, da, du)
    a, u, prev, next  as the forward left them, read-only.
    dstate  S pointers: on entry the loss's gradient of the state at t (h's complete); on return the gradient of
            the state at t-1 through this step's arithmetic alone (the engine adds what flows back through Wh).
    da      G*H: the gradient of a's pre-activations (for summed cells, of x_t Wx + b + h_{t-1} Wh).
    du      G*H: the gradient of u; NULL for summed cells, whose da serves both.

Both run without the GIL on any of the engine's threads, so they keep no state between calls; neither may touch
memory outside the rows given. float32 and float64 versions are both required; one Cython function on the fused
type ``floating`` gives them.
"""
from cpython.pycapsule cimport PyCapsule_New
from cython cimport floating

ctypedef void (*forward_f)(Py_ssize_t H, float *a, const float *u, const float *const *prev,
                           float *const *next) noexcept nogil
ctypedef void (*forward_d)(Py_ssize_t H, double *a, const double *u, const double *const *prev,
                           double *const *next) noexcept nogil
ctypedef void (*backward_f)(Py_ssize_t H, const float *a, const float *u, const float *const *prev,
                            const float *const *next, float *const *dstate, float *da, float *du) noexcept nogil
ctypedef void (*backward_d)(Py_ssize_t H, const double *a, const double *u, const double *const *prev,
                            const double *const *next, double *const *dstate, double *da,
                            double *du) noexcept nogil

# Vectorised in place over y[0:n], defined in captionkit/_ext/pointwise.pyx: float32 by a polynomial exp/tanh
# (about 2e-7 relative error), float64 by an exp within 2 ulps and libm's tanh; each loop is compiled for AVX-512,
# AVX2 and baseline x86-64. sigmoid never gives NaN for a number (below -88 / -709 it returns about exp(-88) /
# exp(-709)). Cython imports them when a plugin's module loads, checking each signature.
cdef void sigmoid_f(float *y, Py_ssize_t n) noexcept nogil
cdef void sigmoid_d(double *y, Py_ssize_t n) noexcept nogil
cdef void tanh_f(float *y, Py_ssize_t n) noexcept nogil
cdef void tanh_d(double *y, Py_ssize_t n) noexcept nogil


cdef inline void sigmoid(floating *y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        sigmoid_f(y, n)
    else:
        sigmoid_d(y, n)


cdef inline void tanh(floating *y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        tanh_f(y, n)
    else:
        tanh_d(y, n)


# The capsules' names: the version of this interface and the C signature, which captionkit checks when it loads a
# cell (as scipy's LowLevelCallable does), so a plugin built against another version is refused by name.
cdef extern from *:
    """
    #define CK_POINTWISE_FORWARD_F32 "captionkit.pointwise.v1 forward float32: void (Py_ssize_t, float *, const float *, const float *const *, float *const *)"
    #define CK_POINTWISE_FORWARD_F64 "captionkit.pointwise.v1 forward float64: void (Py_ssize_t, double *, const double *, const double *const *, double *const *)"
    #define CK_POINTWISE_BACKWARD_F32 "captionkit.pointwise.v1 backward float32: void (Py_ssize_t, const float *, const float *, const float *const *, const float *const *, float *const *, float *, float *)"
    #define CK_POINTWISE_BACKWARD_F64 "captionkit.pointwise.v1 backward float64: void (Py_ssize_t, const double *, const double *, const double *const *, const double *const *, double *const *, double *, double *)"
    """
    const char *FORWARD_F32_NAME "CK_POINTWISE_FORWARD_F32"
    const char *FORWARD_F64_NAME "CK_POINTWISE_FORWARD_F64"
    const char *BACKWARD_F32_NAME "CK_POINTWISE_BACKWARD_F32"
    const char *BACKWARD_F64_NAME "CK_POINTWISE_BACKWARD_F64"


cdef inline dict pointwise_capsules(forward_f forward_float32, backward_f backward_float32,
                                    forward_d forward_float64, backward_d backward_float64):
    """The four functions as named capsules: the dict that a GatedCell's ``compiled_pointwise`` names."""
    return {
        "forward float32": PyCapsule_New(<void *> forward_float32, FORWARD_F32_NAME, NULL),
        "backward float32": PyCapsule_New(<void *> backward_float32, BACKWARD_F32_NAME, NULL),
        "forward float64": PyCapsule_New(<void *> forward_float64, FORWARD_F64_NAME, NULL),
        "backward float64": PyCapsule_New(<void *> backward_float64, BACKWARD_F64_NAME, NULL),
    }
