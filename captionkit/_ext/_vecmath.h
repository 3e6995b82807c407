/* Elementwise loops of the compiled kernels (tanh, sigmoid, softmax rows, argmax, top-k, Adam).
 *
 * Everything between the BLAS calls lives here, in plain C loops that GCC vectorises: float32 uses a polynomial
 * exp/tanh (about 2e-7 relative error, NaN in gives NaN out) because libm's scalar expf/tanhf would cost more than
 * the matrix products around them; float64 uses a polynomial exp within 2 ulps and libm's tanh. On x86-64 Linux with
 * GCC each hot loop is compiled three times (AVX-512, AVX2+FMA and baseline SSE2) and the loader picks the best one
 * the CPU runs.
 * Sizes and indices are Py_ssize_t; callers have checked every index.
 */
#ifndef CAPTIONKIT_VECMATH_H
#define CAPTIONKIT_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "Python.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CK_CLONES
#endif

/* Reductions that GCC may reorder only when told so (compiled with -fopenmp-simd; a no-op elsewhere). */
#define CK_PRAGMA(text) _Pragma(#text)
#define CK_SIMD_SUM(var) CK_PRAGMA(omp simd reduction(+ : var))
#define CK_SIMD_MAX(var) CK_PRAGMA(omp simd reduction(max : var))

/* ------------------------------------------------------------------ float32 exp and tanh */

/* exp(x) for x in float32: x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor series to r^7 (truncation below
 * 6e-9), times 2^n built in the exponent bits. Inputs are clamped to [-87, 88] so 2^n stays a normal float; NaN
 * passes the clamps (every comparison with it is false) and comes out NaN. */
static inline float ck_expf(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* Adding 1.5 * 2^23 rounds x*log2(e) to the nearest integer, which lands in the low mantissa bits of t. */
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    /* Cody-Waite: ln2 split in a part exact in float and a small correction, so r keeps its low bits. */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23; /* the integer n, biased, moved into the exponent field */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* tanh(x) for float32: an odd polynomial (least-squares fit of tanh(x)/x in x^2, written for this file) where
 * |x| < 0.625, where 1 - 2/(exp(2|x|)+1) would lose digits to cancellation; that formula elsewhere, with |x|
 * clamped at 10, where the formula rounds to exactly 1 in float32 (at 9 it still gives 1 - 2^-24). Both are computed and one is selected, so the loop vectorises. */
static inline float ck_tanhf(float x)
{
    float a = fabsf(x);
    float z = x * x;
    float small = x + x * z * (-3.333241984e-01f + z * (1.330931267e-01f + z * (-5.199600453e-02f +
                                                                                  z * 1.525760488e-02f)));
    float clamped = a > 10.0f ? 10.0f : a;
    float big = 1.0f - 2.0f / (ck_expf(2.0f * clamped) + 1.0f);
    big = copysignf(big, x);
    return a < 0.625f ? small : big;
}

/* exp(x) for float64, the same scheme with 1.5 * 2^52, the ln2 split of Cephes and the Taylor series to r^12
 * (truncation below 2e-16): within 2 ulps of libm, and it vectorises. */
static inline double ck_exp(double x)
{
    x = x < -708.0 ? -708.0 : x;
    x = x > 709.0 ? 709.0 : x;
    double t = x * 1.4426950408889634 + 6755399441055744.0;
    double n = t - 6755399441055744.0;
    double r = x - n * 6.93145751953125e-1 - n * 1.42860682030941723212e-6;
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4338000000000000ull + 1023ull) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* ------------------------------------------------------------------ recurrences */

/* y[i] = tanh(y[i] + b[i]); float64 keeps libm's tanh (exact to an ulp, and not on the float32 hot path). */
CK_CLONES static void ck_tanh_bias_f(float *y, const float *b, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        y[i] = ck_tanhf(y[i] + b[i]);
}

static void ck_tanh_bias_d(double *y, const double *b, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        y[i] = tanh(y[i] + b[i]);
}

/* Each macro below defines one loop for a type T (float, then double), so the two precisions cannot drift apart;
 * EXP is that type's exp. */

/* da[i] *= 1 - h[i]^2, the derivative of tanh at the value h it produced */
#define CK_DEFINE_TANH_GRAD(NAME, T)                                                                          \
    CK_CLONES static void NAME(T *da, const T *h, Py_ssize_t n)                                               \
    {                                                                                                         \
        for (Py_ssize_t i = 0; i < n; i++)                                                                    \
            da[i] *= 1 - h[i] * h[i];                                                                         \
    }
CK_DEFINE_TANH_GRAD(ck_tanh_grad_f, float)
CK_DEFINE_TANH_GRAD(ck_tanh_grad_d, double)

/* y[i] += x[i] */
#define CK_DEFINE_ADD(NAME, T)                                                                                \
    CK_CLONES static void NAME(T *y, const T *x, Py_ssize_t n)                                                \
    {                                                                                                         \
        for (Py_ssize_t i = 0; i < n; i++)                                                                    \
            y[i] += x[i];                                                                                     \
    }
CK_DEFINE_ADD(ck_add_f, float)
CK_DEFINE_ADD(ck_add_d, double)

/* ------------------------------------------------------------------ activations in place */

/* For cells' compiled pointwise parts (pointwise.pyx exports them); modules that include this header without using
 * them would warn that they are unused without CK_MAYBE_UNUSED. */
#if defined(__GNUC__)
#define CK_MAYBE_UNUSED __attribute__((unused))
#else
#define CK_MAYBE_UNUSED
#endif

/* y[i] = 1 / (1 + exp(-y[i])). With the clamps of ck_expf/ck_exp the result stays in [0, 1], never NaN for a
 * number: below x = -88 (float) or -709 (double) it is exp(-88) or exp(-709) rather than the true smaller value. */
#define CK_DEFINE_SIGMOID_INPLACE(NAME, T, EXP)                                                               \
    CK_MAYBE_UNUSED CK_CLONES static void NAME(T *y, Py_ssize_t n)                                              \
    {                                                                                                         \
        for (Py_ssize_t i = 0; i < n; i++)                                                                    \
            y[i] = 1 / (1 + EXP(-y[i]));                                                                      \
    }
CK_DEFINE_SIGMOID_INPLACE(ck_sigmoid_inplace_f, float, ck_expf)
CK_DEFINE_SIGMOID_INPLACE(ck_sigmoid_inplace_d, double, ck_exp)

/* y[i] = tanh(y[i]); float64 keeps libm's tanh, as ck_tanh_bias_d does. */
CK_MAYBE_UNUSED CK_CLONES static void ck_tanh_inplace_f(float *y, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        y[i] = ck_tanhf(y[i]);
}

CK_MAYBE_UNUSED static void ck_tanh_inplace_d(double *y, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        y[i] = tanh(y[i]);
}

/* ------------------------------------------------------------------ softmax rows */

/* s[i] += b[i]; returns the maximum (what exp is shifted by) */
#define CK_DEFINE_ADD_MAX(NAME, T)                                                                            \
    static inline T NAME(T *s, const T *b, Py_ssize_t n)                                                      \
    {                                                                                                         \
        T m = -INFINITY;                                                                                      \
        CK_SIMD_MAX(m)                                                                                        \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                  \
            T v = s[i] + b[i];                                                                                \
            s[i] = v;                                                                                         \
            m = v > m ? v : m;                                                                                \
        }                                                                                                     \
        return m;                                                                                             \
    }
CK_DEFINE_ADD_MAX(ck_add_max_f, float)
CK_DEFINE_ADD_MAX(ck_add_max_d, double)

/* One row of the fused output layer. On entry s holds the scores without bias; on exit it holds
 * scale * (softmax(s + b) - onehot(target)), the gradient of the row's loss. Returns the row's loss
 * -log softmax(s + b)[target], unscaled, in double. */
#define CK_DEFINE_SOFTMAX_XENT(NAME, T, EXP, ADD_MAX)                                                         \
    CK_CLONES static double NAME(T *s, const T *b, Py_ssize_t n, Py_ssize_t target, T scale)                  \
    {                                                                                                         \
        T m = ADD_MAX(s, b, n);                                                                               \
        T picked = s[target] - m;                                                                             \
        T sum = 0;                                                                                            \
        CK_SIMD_SUM(sum)                                                                                      \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                  \
            T e = EXP(s[i] - m);                                                                              \
            s[i] = e;                                                                                         \
            sum += e;                                                                                         \
        }                                                                                                     \
        T k = scale / sum;                                                                                    \
        for (Py_ssize_t i = 0; i < n; i++)                                                                    \
            s[i] *= k;                                                                                        \
        s[target] -= scale;                                                                                   \
        return log((double)sum) - (double)picked;                                                             \
    }
CK_DEFINE_SOFTMAX_XENT(ck_softmax_xent_f, float, ck_expf, ck_add_max_f)
CK_DEFINE_SOFTMAX_XENT(ck_softmax_xent_d, double, ck_exp, ck_add_max_d)

/* ------------------------------------------------------------------ selection */

/* Index of the largest s[i] + b[i] (s is overwritten with the sums), the first one on ties; the first NaN when
 * there is one, as numpy's argmax does. */
#define CK_DEFINE_ARGMAX(NAME, T)                                                                             \
    CK_CLONES static Py_ssize_t NAME(T *s, const T *b, Py_ssize_t n)                                          \
    {                                                                                                         \
        T m = -INFINITY;                                                                                      \
        int nan_seen = 0;                                                                                     \
        CK_PRAGMA(omp simd reduction(max : m) reduction(| : nan_seen))                                        \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                  \
            T v = s[i] + b[i];                                                                                \
            s[i] = v;                                                                                         \
            m = v > m ? v : m;                                                                                \
            nan_seen |= v != v;                                                                               \
        }                                                                                                     \
        for (Py_ssize_t i = 0; i < n; i++)                                                                    \
            if (nan_seen ? s[i] != s[i] : s[i] == m)                                                          \
                return i;                                                                                     \
        return 0; /* every value is -inf */                                                                   \
    }
CK_DEFINE_ARGMAX(ck_argmax_bias_f, float)
CK_DEFINE_ARGMAX(ck_argmax_bias_d, double)

/* The k largest of s[0..n) in descending order into (vals, idx): ties go to the lower index and NaN ranks below
 * every number, which is the order of numpy's stable argsort of -s. Insertion into a sorted list of k: cheap for
 * the beam widths decoding uses. */
#define CK_DEFINE_TOPK(NAME, T)                                                                               \
    static void NAME(const T *s, Py_ssize_t n, Py_ssize_t k, T *vals, int64_t *idx)                           \
    {                                                                                                         \
        Py_ssize_t filled = 0;                                                                                \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                  \
            T v = s[i];                                                                                       \
            if (filled == k) {                                                                                \
                T w = vals[k - 1];                                                                            \
                /* i is later than every kept index, so it only beats a strictly smaller value or a NaN */    \
                if (!(v > w || (w != w && v == v)))                                                          \
                    continue;                                                                                 \
                filled--;                                                                                     \
            }                                                                                                 \
            Py_ssize_t j = filled;                                                                            \
            while (j > 0 && (v > vals[j - 1] || (vals[j - 1] != vals[j - 1] && v == v))) {                   \
                vals[j] = vals[j - 1];                                                                        \
                idx[j] = idx[j - 1];                                                                          \
                j--;                                                                                          \
            }                                                                                                 \
            vals[j] = v;                                                                                      \
            idx[j] = (int64_t)i;                                                                              \
            filled++;                                                                                         \
        }                                                                                                     \
    }
CK_DEFINE_TOPK(ck_topk_f, float)
CK_DEFINE_TOPK(ck_topk_d, double)

/* The k best words of one row of scores for beam search: s += b in place, then (vals, idx) = the k largest of s
 * ranked as ck_topk ranks them (so k = 1 picks ck_argmax_bias's word), turned into log-probabilities
 * log softmax(s)[idx]; the log-sum-exp is taken in double. */
#define CK_DEFINE_TOPK_LOG_SOFTMAX(NAME, T, EXP, ADD_MAX, TOPK)                                               \
    CK_CLONES static void NAME(T *s, const T *b, Py_ssize_t n, Py_ssize_t k, T *vals, int64_t *idx)           \
    {                                                                                                         \
        T m = ADD_MAX(s, b, n);                                                                               \
        T sum = 0;                                                                                            \
        CK_SIMD_SUM(sum)                                                                                      \
        for (Py_ssize_t i = 0; i < n; i++)                                                                    \
            sum += EXP(s[i] - m);                                                                             \
        double lse = (double)m + log((double)sum);                                                            \
        TOPK(s, n, k, vals, idx);                                                                             \
        for (Py_ssize_t j = 0; j < k; j++)                                                                    \
            vals[j] = (T)((double)vals[j] - lse);                                                             \
    }
CK_DEFINE_TOPK_LOG_SOFTMAX(ck_topk_log_softmax_f, float, ck_expf, ck_add_max_f, ck_topk_f)
CK_DEFINE_TOPK_LOG_SOFTMAX(ck_topk_log_softmax_d, double, ck_exp, ck_add_max_d, ck_topk_d)

/* ------------------------------------------------------------------ optimiser */

/* One Adam step in place, with the arithmetic of captionkit.optim.adam up to rounding: m and v are the moment
 * estimates, c1 = 1 - beta1^t and c2 = 1 - beta2^t the bias corrections. The corrections are applied through two
 * numbers computed once, lr / c1 and 1 / sqrt(c2), because a vector division or square root costs about as much as
 * ten multiplications: the reference's three divisions and a square root per element made the update
 * compute-bound (0.9 ns per float32 element even on data in L2). */
#define CK_DEFINE_ADAM(NAME, T, SQRT)                                                                         \
    CK_CLONES static void NAME(T *w, const T *dw, T *m, T *v, Py_ssize_t n, T lr, T beta1, T beta2, T eps,    \
                               T c1, T c2)                                                                    \
    {                                                                                                         \
        const T step = lr / c1, unbias_v = 1 / SQRT(c2);                                                      \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                  \
            T g = dw[i];                                                                                      \
            T mi = beta1 * m[i] + (1 - beta1) * g;                                                            \
            T vi = beta2 * v[i] + (1 - beta2) * (g * g);                                                      \
            m[i] = mi;                                                                                        \
            v[i] = vi;                                                                                        \
            w[i] -= step * mi / (SQRT(vi) * unbias_v + eps);                                                  \
        }                                                                                                     \
    }
CK_DEFINE_ADAM(ck_adam_f, float, sqrtf)
CK_DEFINE_ADAM(ck_adam_d, double, sqrt)

#endif
