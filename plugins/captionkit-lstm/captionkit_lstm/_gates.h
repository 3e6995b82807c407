/* The backward gate arithmetic of the LSTM, one row of one time step, for _loops.pyx.
 *
 * It is C rather than Cython for one word: restrict. Written in Cython, the loop reads six arrays and writes two,
 * more pairs than GCC will check for overlap at run time, so it stayed scalar and took about a fifth of the backward
 * time loop; with restrict pointers it vectorises.
 */
#ifndef CAPTIONKIT_LSTM_GATES_H
#define CAPTIONKIT_LSTM_GATES_H

#include "Python.h"

/* From the activated gates a (4H: i, f, o, g), tanh(c_t), c_{t-1}, the loss's gradient dh of h_t and the gradient
 * dh_next sent back by step t+1 (H each), write the gradients da (4H) of the gate pre-activations and replace
 * dc_next (on entry the gradient of c_t from step t+1) by the gradient of c_{t-1}. */
#define LSTM_DEFINE_GATES_BACKWARD(NAME, T)                                                                   \
    static void NAME(const T *restrict a, const T *restrict tanh_c, const T *restrict prev_c,                 \
                     const T *restrict dh, const T *restrict dh_next, T *restrict dc_next, T *restrict da,    \
                     Py_ssize_t H)                                                                            \
    {                                                                                                         \
        for (Py_ssize_t j = 0; j < H; j++) {                                                                  \
            T i = a[j], f = a[H + j], o = a[2 * H + j], g = a[3 * H + j], tc = tanh_c[j];                     \
            T dh_t = dh[j] + dh_next[j];                                                                      \
            T dc = dc_next[j] + dh_t * o * (1 - tc * tc);                                                     \
            da[j] = dc * g * i * (1 - i);                                                                     \
            da[H + j] = dc * prev_c[j] * f * (1 - f);                                                         \
            da[2 * H + j] = dh_t * tc * o * (1 - o);                                                          \
            da[3 * H + j] = dc * i * (1 - g * g);                                                             \
            dc_next[j] = dc * f;                                                                              \
        }                                                                                                     \
    }
LSTM_DEFINE_GATES_BACKWARD(lstm_gates_backward_f, float)
LSTM_DEFINE_GATES_BACKWARD(lstm_gates_backward_d, double)

#endif
