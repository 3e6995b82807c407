# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The LSTM's gate arithmetic for one row of one step, compiled: what captionkit's recurrence engine calls between
its products (captionkit/_ext/pointwise.pxd gives the signatures; the compiler checks them)."""
from cython cimport floating
from libc.string cimport memcpy

from captionkit._ext.pointwise cimport pointwise_capsules, sigmoid, tanh


cdef void lstm_forward(Py_ssize_t H, floating *a, const floating *u, const floating *const *prev,
                       floating *const *next) noexcept nogil:
    # a: x Wx + h Wh + b in blocks i, f, o, g, activated in place; block 4 keeps tanh(c') for the backward.
    cdef floating *h = next[0]
    cdef floating *c = next[1]
    cdef const floating *prev_c = prev[1]
    cdef floating *tanh_c = a + 4 * H
    cdef Py_ssize_t j
    sigmoid(a, 3 * H)
    tanh(a + 3 * H, H)
    for j in range(H):
        c[j] = a[H + j] * prev_c[j] + a[j] * a[3 * H + j]
    memcpy(tanh_c, c, H * sizeof(floating))
    tanh(tanh_c, H)
    for j in range(H):
        h[j] = a[2 * H + j] * tanh_c[j]


cdef void lstm_backward(Py_ssize_t H, const floating *a, const floating *u, const floating *const *prev,
                        const floating *const *next, floating *const *dstate, floating *da,
                        floating *du) noexcept nogil:
    # dstate: (dh, dc) of h', c' in; out, what reaches h and c directly: nothing for h (only through Wh), dc * f.
    # One pointer per block, so that GCC sees the few streams it must check for overlap and vectorises the loop.
    cdef const floating *i = a
    cdef const floating *f = a + H
    cdef const floating *o = a + 2 * H
    cdef const floating *g = a + 3 * H
    cdef const floating *tanh_c = a + 4 * H
    cdef const floating *prev_c = prev[1]
    cdef floating *dh = dstate[0]
    cdef floating *dc_next = dstate[1]
    cdef floating *di = da
    cdef floating *df = da + H
    cdef floating *do = da + 2 * H
    cdef floating *dg = da + 3 * H
    cdef floating dc, one = 1  # Cython writes a literal 1 as the C double 1.0, which would take float code to double
    cdef Py_ssize_t j
    for j in range(H):
        dc = dc_next[j] + dh[j] * o[j] * (one - tanh_c[j] * tanh_c[j])
        di[j] = dc * g[j] * i[j] * (one - i[j])
        df[j] = dc * prev_c[j] * f[j] * (one - f[j])
        do[j] = dh[j] * tanh_c[j] * o[j] * (one - o[j])
        dg[j] = dc * i[j] * (one - g[j] * g[j])
        dh[j] = 0
        dc_next[j] = dc * f[j]


CAPSULES = pointwise_capsules(lstm_forward[float], lstm_backward[float], lstm_forward[double], lstm_backward[double])
