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
    cdef floating *r = a
    cdef floating *z = a + H
    cdef floating *n = a + 2 * H
    cdef const floating *u_n = u + 2 * H
    cdef floating one = 1  # Cython writes a literal 1 as the C double 1.0, which would take float code to double
    cdef Py_ssize_t j
    for j in range(2 * H):
        a[j] += u[j]
    sigmoid(a, 2 * H)
    for j in range(H):
        n[j] += r[j] * u_n[j]
    tanh(n, H)
    for j in range(H):
        out[j] = (one - z[j]) * n[j] + z[j] * h[j]


cdef void gru_backward(Py_ssize_t H, const floating *a, const floating *u, const floating *const *prev,
                       const floating *const *next, floating *const *dstate, floating *da,
                       floating *du) noexcept nogil:
    # dstate[0]: dh of h' in; out, what reaches h directly: dh * z. One pointer per block, so that GCC sees the few
    # streams it must check for overlap and vectorises the loop.
    cdef const floating *h = prev[0]
    cdef const floating *r = a
    cdef const floating *z = a + H
    cdef const floating *n = a + 2 * H
    cdef const floating *u_n = u + 2 * H
    cdef floating *dh = dstate[0]
    cdef floating *dr = da
    cdef floating *dz = da + H
    cdef floating *dn = da + 2 * H
    cdef floating *du_r = du
    cdef floating *du_z = du + H
    cdef floating *du_n = du + 2 * H
    cdef floating one = 1
    cdef Py_ssize_t j
    for j in range(H):
        dn[j] = dh[j] * (one - z[j]) * (one - n[j] * n[j])
        dz[j] = dh[j] * (h[j] - n[j]) * z[j] * (one - z[j])
        dr[j] = dn[j] * u_n[j] * r[j] * (one - r[j])
        du_r[j], du_z[j], du_n[j] = dr[j], dz[j], dn[j] * r[j]
        dh[j] = dh[j] * z[j]


CAPSULES = pointwise_capsules(gru_forward[float], gru_backward[float], gru_forward[double], gru_backward[double])
