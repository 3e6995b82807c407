# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The GRU's gate arithmetic for one row of one step, compiled: what captionkit's recurrence engine calls between
its products (captionkit/_ext/pointwise.pxd gives the signatures; the compiler checks them)."""
from cython cimport floating

from captionkit._ext.pointwise cimport pointwise_capsules, sigmoid, tanh


cdef void gru_forward(Py_ssize_t H, floating *a, const floating *u, const floating *const *prev,
                      floating *const *next) noexcept nogil:
    # a = x Wx + b and u = h Wh in blocks r, z, n; a becomes the activated r, z, n for the backward.
    cdef const floating *h = prev[0]
    cdef floating *out = next[0]
    cdef Py_ssize_t j
    for j in range(2 * H):
        a[j] += u[j]
    sigmoid(a, 2 * H)
    for j in range(H):
        a[2 * H + j] += a[j] * u[2 * H + j]
    tanh(a + 2 * H, H)
    for j in range(H):
        out[j] = (1 - a[H + j]) * a[2 * H + j] + a[H + j] * h[j]


cdef void gru_backward(Py_ssize_t H, const floating *a, const floating *u, const floating *const *prev,
                       const floating *const *next, floating *const *dstate, floating *da,
                       floating *du) noexcept nogil:
    # dstate[0]: dh of h' in; out, what reaches h directly: dh * z.
    cdef const floating *h = prev[0]
    cdef floating *dh = dstate[0]
    cdef floating r, z, n, dn, dz, dr
    cdef Py_ssize_t j
    for j in range(H):
        r, z, n = a[j], a[H + j], a[2 * H + j]
        dn = dh[j] * (1 - z) * (1 - n * n)
        dz = dh[j] * (h[j] - n) * z * (1 - z)
        dr = dn * u[2 * H + j] * r * (1 - r)
        da[j], da[H + j], da[2 * H + j] = dr, dz, dn
        du[j], du[H + j], du[2 * H + j] = dr, dz, dn * r
        dh[j] = dh[j] * z


CAPSULES = pointwise_capsules(gru_forward[float], gru_backward[float], gru_forward[double], gru_backward[double])
