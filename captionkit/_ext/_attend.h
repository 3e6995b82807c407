/* Soft attention's arithmetic between the matrix products, one row (one caption at one step) at a time.
 *
 * The engine (_attend.pyx) computes q = h Wa + ba and beta's pre-activations h Wbeta + bbeta for all rows with one
 * product each, then calls ck_soft_forward_row per row; backward, ck_soft_backward_row per row, then products again.
 * The equations are captionkit/attention/soft.py's (the numpy reference), with L regions of D features and
 * attention size P:
 *
 *     s_l   = tanh(keys_l + q)            keys_l = V_l Ua, P values
 *     e_l   = s_l . wa
 *     alpha = softmax over l of e         L values
 *     z     = sum_l alpha_l V_l           D values
 *     beta  = sigmoid(beta's pre-activations), g = beta * z
 *
 * float32 uses _vecmath.h's polynomial exp/tanh/sigmoid (about 2e-7 relative error); float64 libm's tanh and an exp
 * within 2 ulps. Callers have checked every size.
 */
#ifndef CAPTIONKIT_ATTEND_H
#define CAPTIONKIT_ATTEND_H

#include "_vecmath.h"

#define CK_DEFINE_DOT(NAME, T)                                                                                \
    static inline T NAME(const T *x, const T *y, Py_ssize_t n)                                                \
    {                                                                                                         \
        T total = 0;                                                                                          \
        CK_SIMD_SUM(total)                                                                                    \
        for (Py_ssize_t i = 0; i < n; i++)                                                                    \
            total += x[i] * y[i];                                                                             \
        return total;                                                                                         \
    }
CK_DEFINE_DOT(ck_dot_f, float)
CK_DEFINE_DOT(ck_dot_d, double)

/* y += alpha * x */
#define CK_DEFINE_AXPY(NAME, T)                                                                               \
    static inline void NAME(T alpha, const T *x, T *y, Py_ssize_t n)                                          \
    {                                                                                                         \
        for (Py_ssize_t i = 0; i < n; i++)                                                                    \
            y[i] += alpha * x[i];                                                                             \
    }
CK_DEFINE_AXPY(ck_axpy_f, float)
CK_DEFINE_AXPY(ck_axpy_d, double)

/* Forward of one row. V (L*D) and keys (L*P) are the row's image; q (P) and beta (D, the pre-activations on entry,
 * the gate on exit) come from the products. Writes s (L*P), alpha (L), z (D) and g (D). */
#define CK_DEFINE_SOFT_FORWARD(NAME, T, EXP, TANH, SIGMOID, DOT, AXPY)                                         \
    CK_MAYBE_UNUSED CK_CLONES static void NAME(Py_ssize_t L, Py_ssize_t D, Py_ssize_t P, const T *V,           \
                                               const T *keys, const T *q, const T *wa, T *s, T *alpha, T *z,   \
                                               T *beta, T *g)                                                  \
    {                                                                                                         \
        for (Py_ssize_t l = 0; l < L; l++)                                                                    \
            for (Py_ssize_t a = 0; a < P; a++)                                                                \
                s[l * P + a] = keys[l * P + a] + q[a];                                                        \
        TANH(s, L * P);                                                                                       \
        T top = -INFINITY, total = 0;                                                                         \
        for (Py_ssize_t l = 0; l < L; l++) {                                                                  \
            alpha[l] = DOT(s + l * P, wa, P);                                                                 \
            top = alpha[l] > top ? alpha[l] : top;                                                            \
        }                                                                                                     \
        for (Py_ssize_t l = 0; l < L; l++) {                                                                  \
            alpha[l] = EXP(alpha[l] - top);                                                                   \
            total += alpha[l];                                                                                \
        }                                                                                                     \
        memset(z, 0, D * sizeof(T));                                                                          \
        for (Py_ssize_t l = 0; l < L; l++) {                                                                  \
            alpha[l] /= total;                                                                                \
            AXPY(alpha[l], V + l * D, z, D);                                                                  \
        }                                                                                                     \
        SIGMOID(beta, D);                                                                                     \
        for (Py_ssize_t d = 0; d < D; d++)                                                                    \
            g[d] = beta[d] * z[d];                                                                            \
    }
CK_DEFINE_SOFT_FORWARD(ck_soft_forward_row_f, float, ck_expf, ck_tanh_inplace_f, ck_sigmoid_inplace_f, ck_dot_f,
                       ck_axpy_f)
CK_DEFINE_SOFT_FORWARD(ck_soft_forward_row_d, double, ck_exp, ck_tanh_inplace_d, ck_sigmoid_inplace_d, ck_dot_d,
                       ck_axpy_d)

/* Backward of one row, from dg (D), the gradient of g, and dalpha (L), the penalty's gradient of alpha (read, then
 * overwritten as work space). Reads V, wa and what the forward left (s, alpha, z, beta); writes dbeta (D), the
 * gradient of beta's pre-activations, and dq (P); adds into dV (L*D; NULL: V's gradient is not wanted), dkeys
 * (L*P) and dwa (P). dz (D) is work space. */
#define CK_DEFINE_SOFT_BACKWARD(NAME, T, DOT, AXPY)                                                           \
    CK_MAYBE_UNUSED CK_CLONES static void NAME(Py_ssize_t L, Py_ssize_t D, Py_ssize_t P, const T *V,           \
                                               const T *wa, const T *s, const T *alpha, const T *z,            \
                                               const T *beta, const T *dg, T *dalpha, T *dbeta, T *dq, T *dV,  \
                                               T *dkeys, T *dwa, T *dz)                                        \
    {                                                                                                         \
        for (Py_ssize_t d = 0; d < D; d++) {                                                                  \
            dz[d] = dg[d] * beta[d];                                                                          \
            dbeta[d] = dg[d] * z[d] * beta[d] * (1 - beta[d]);                                                \
        }                                                                                                     \
        T weighted = 0; /* sum_l alpha_l dalpha_l, the softmax's backward shift */                            \
        for (Py_ssize_t l = 0; l < L; l++) {                                                                  \
            dalpha[l] += DOT(dz, V + l * D, D);                                                               \
            if (dV != NULL)                                                                                   \
                AXPY(alpha[l], dz, dV + l * D, D);                                                            \
            weighted += alpha[l] * dalpha[l];                                                                 \
        }                                                                                                     \
        memset(dq, 0, P * sizeof(T));                                                                         \
        for (Py_ssize_t l = 0; l < L; l++) {                                                                  \
            T de = alpha[l] * (dalpha[l] - weighted);                                                         \
            const T *sl = s + l * P;                                                                          \
            T *dkl = dkeys + l * P;                                                                           \
            AXPY(de, sl, dwa, P);                                                                             \
            for (Py_ssize_t a = 0; a < P; a++) {                                                              \
                T ds = de * wa[a] * (1 - sl[a] * sl[a]);                                                      \
                dkl[a] += ds;                                                                                 \
                dq[a] += ds;                                                                                  \
            }                                                                                                 \
        }                                                                                                     \
    }
CK_DEFINE_SOFT_BACKWARD(ck_soft_backward_row_f, float, ck_dot_f, ck_axpy_f)
CK_DEFINE_SOFT_BACKWARD(ck_soft_backward_row_d, double, ck_dot_d, ck_axpy_d)

#endif
