"""The built-in vanilla RNN's compiled pointwise part, h_t = tanh(x_t Wx + b + h_{t-1} Wh): written as any plugin
writes one (pointwise.pxd); the recurrence engine does the products and the time loop."""
from cython cimport floating

from captionkit._ext.pointwise cimport pointwise_capsules, tanh


cdef void rnn_forward(Py_ssize_t H, floating *a, const floating *u, const floating *const *prev,
                      floating *const *next) noexcept nogil:
    tanh(a, H)
    cdef Py_ssize_t j
    for j in range(H):
        next[0][j] = a[j]


cdef void rnn_backward(Py_ssize_t H, const floating *a, const floating *u, const floating *const *prev,
                       const floating *const *next, floating *const *dstate, floating *da,
                       floating *du) noexcept nogil:
    # h_t = tanh(a): da = dh * (1 - h_t^2); h_{t-1} reaches h_t only through Wh, so nothing flows back directly.
    cdef Py_ssize_t j
    cdef floating *dh = dstate[0]
    cdef floating one = 1  # Cython writes a literal 1 as the C double 1.0, which would take float code to double
    for j in range(H):
        da[j] = dh[j] * (one - a[j] * a[j])
        dh[j] = 0


CAPSULES = pointwise_capsules(rnn_forward[float], rnn_backward[float], rnn_forward[double], rnn_backward[double])
