"""Addresses of _vecmath.h's in-place activations, for plugins' compiled loops (see
captionkit.kernels.vector_functions); captionkit's own loops use the header directly."""
from captionkit._ext._vecmath cimport (ck_sigmoid_inplace_d, ck_sigmoid_inplace_f, ck_tanh_inplace_d,
                                       ck_tanh_inplace_f)


def addresses():
    """Addresses of the functions ``void f(T *y, Py_ssize_t n)`` by name (``_s`` float32, ``_d`` float64)."""
    return {
        "sigmoid_s": <size_t> ck_sigmoid_inplace_f, "sigmoid_d": <size_t> ck_sigmoid_inplace_d,
        "tanh_s": <size_t> ck_tanh_inplace_f, "tanh_d": <size_t> ck_tanh_inplace_d,
    }
