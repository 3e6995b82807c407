"""Declarations of the elementwise loops in _vecmath.h (see that file for what each computes)."""
from cython cimport floating
from libc.stdint cimport int64_t


cdef extern from "_vecmath.h" nogil:
    void ck_tanh_bias_f(float *y, const float *b, Py_ssize_t n)
    void ck_tanh_bias_d(double *y, const double *b, Py_ssize_t n)
    void ck_tanh_grad_f(float *da, const float *h, Py_ssize_t n)
    void ck_tanh_grad_d(double *da, const double *h, Py_ssize_t n)
    void ck_add_f(float *y, const float *x, Py_ssize_t n)
    void ck_add_d(double *y, const double *x, Py_ssize_t n)
    void ck_sigmoid_inplace_f(float *y, Py_ssize_t n)
    void ck_sigmoid_inplace_d(double *y, Py_ssize_t n)
    void ck_tanh_inplace_f(float *y, Py_ssize_t n)
    void ck_tanh_inplace_d(double *y, Py_ssize_t n)
    double ck_softmax_xent_f(float *s, const float *b, Py_ssize_t n, Py_ssize_t target, float scale)
    double ck_softmax_xent_d(double *s, const double *b, Py_ssize_t n, Py_ssize_t target, double scale)
    Py_ssize_t ck_argmax_bias_f(float *s, const float *b, Py_ssize_t n)
    Py_ssize_t ck_argmax_bias_d(double *s, const double *b, Py_ssize_t n)
    void ck_topk_log_softmax_f(float *s, const float *b, Py_ssize_t n, Py_ssize_t k, float *vals, int64_t *idx)
    void ck_topk_log_softmax_d(double *s, const double *b, Py_ssize_t n, Py_ssize_t k, double *vals,
                               int64_t *idx)
    void ck_adam_f(float *w, const float *dw, float *m, float *v, Py_ssize_t n, float lr, float beta1,
                   float beta2, float eps, float c1, float c2)
    void ck_adam_d(double *w, const double *dw, double *m, double *v, Py_ssize_t n, double lr, double beta1,
                   double beta2, double eps, double c1, double c2)


# Fused-type front ends: one name for both precisions.

cdef inline void tanh_bias(floating *y, const floating *b, Py_ssize_t n) noexcept nogil:
    if floating is float:
        ck_tanh_bias_f(y, b, n)
    else:
        ck_tanh_bias_d(y, b, n)


cdef inline void tanh_grad(floating *da, const floating *h, Py_ssize_t n) noexcept nogil:
    if floating is float:
        ck_tanh_grad_f(da, h, n)
    else:
        ck_tanh_grad_d(da, h, n)


cdef inline void add(floating *y, const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        ck_add_f(y, x, n)
    else:
        ck_add_d(y, x, n)


cdef inline double softmax_xent(floating *s, const floating *b, Py_ssize_t n, Py_ssize_t target,
                                floating scale) noexcept nogil:
    if floating is float:
        return ck_softmax_xent_f(s, b, n, target, scale)
    else:
        return ck_softmax_xent_d(s, b, n, target, scale)


cdef inline Py_ssize_t argmax_bias(floating *s, const floating *b, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return ck_argmax_bias_f(s, b, n)
    else:
        return ck_argmax_bias_d(s, b, n)


cdef inline void topk_log_softmax(floating *s, const floating *b, Py_ssize_t n, Py_ssize_t k, floating *vals,
                                  int64_t *idx) noexcept nogil:
    if floating is float:
        ck_topk_log_softmax_f(s, b, n, k, vals, idx)
    else:
        ck_topk_log_softmax_d(s, b, n, k, vals, idx)


cdef inline void adam(floating *w, const floating *dw, floating *m, floating *v, Py_ssize_t n, floating lr,
                      floating beta1, floating beta2, floating eps, floating c1, floating c2) noexcept nogil:
    if floating is float:
        ck_adam_f(w, dw, m, v, n, lr, beta1, beta2, eps, c1, c2)
    else:
        ck_adam_d(w, dw, m, v, n, lr, beta1, beta2, eps, c1, c2)
