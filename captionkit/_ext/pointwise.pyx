"""The vectorised activations that pointwise.pxd declares for cells' compiled pointwise parts (_vecmath.h's loops),
exported through this module's C API so that plugins share captionkit's code rather than libm's scalar calls."""
from cython cimport floating

from captionkit._ext._vecmath cimport (ck_sigmoid_inplace_d, ck_sigmoid_inplace_f, ck_tanh_inplace_d,
                                       ck_tanh_inplace_f)


cdef void sigmoid_f(float *y, Py_ssize_t n) noexcept nogil:
    ck_sigmoid_inplace_f(y, n)


cdef void sigmoid_d(double *y, Py_ssize_t n) noexcept nogil:
    ck_sigmoid_inplace_d(y, n)


cdef void tanh_f(float *y, Py_ssize_t n) noexcept nogil:
    ck_tanh_inplace_f(y, n)


cdef void tanh_d(double *y, Py_ssize_t n) noexcept nogil:
    ck_tanh_inplace_d(y, n)


def capsule_names():
    """The names a cell's four pointwise capsules must carry, by their keys in ``pointwise_capsules``'s dict."""
    return {
        "forward float32": FORWARD_F32_NAME.decode(), "backward float32": BACKWARD_F32_NAME.decode(),
        "forward float64": FORWARD_F64_NAME.decode(), "backward float64": BACKWARD_F64_NAME.decode(),
    }


def sigmoid_inplace(floating[::1] y):
    """y[:] = sigmoid(y) (for captionkit.kernels.sigmoid, which checks y)."""
    if y.shape[0]:
        with nogil:
            sigmoid(&y[0], y.shape[0])


def tanh_inplace(floating[::1] y):
    """y[:] = tanh(y) (for captionkit.kernels.tanh, which checks y)."""
    if y.shape[0]:
        with nogil:
            tanh(&y[0], y.shape[0])
