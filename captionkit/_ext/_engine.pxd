"""What the gated recurrence engine (_engine.pyx) shares with the modules built on it (_attend.pyx): the cell as the
engine runs it, and one time step's pieces. Every function here works on one step's N rows; strides are in
elements, and a state array s of row n starts at ``base + s * state_stride + n * row_stride``."""
from cython cimport floating
from libc.stdint cimport uint16_t, uint32_t
from libc.string cimport memcpy, memset

cdef enum:
    MAX_STATES = 8  # the row functions get their state pointers in arrays of this size on the stack


cdef class CellCode:
    cdef readonly Py_ssize_t gates, states, kept
    cdef readonly bint summed
    cdef void *forward_f32
    cdef void *backward_f32
    cdef void *forward_f64
    cdef void *backward_f64
    cdef readonly object numpy_forward, numpy_backward
    cdef object capsules  # owns the function pointers' capsules while this object lives


cdef void step_rows(void *fn, Py_ssize_t N, Py_ssize_t H, Py_ssize_t S, Py_ssize_t GH, bint summed,
                    const floating *Wh, floating *packed_Wh, const uint16_t *bf16_Wh, uint32_t *work,
                    floating *a, Py_ssize_t lda, floating *u,
                    Py_ssize_t ldu, const floating *prev, Py_ssize_t prev_s, Py_ssize_t prev_n, floating *nxt,
                    Py_ssize_t next_s, Py_ssize_t next_n) noexcept nogil

cdef int undo_step(CellCode code, void *fn, Py_ssize_t t, const floating[:, :, ::1] dh,
                   const floating[:, :, ::1] s0, const floating[:, :, :, ::1] states, const floating *a,
                   const floating *u, Py_ssize_t width, floating[:, :, ::1] dstate, floating[:, :, ::1] dA,
                   floating[:, :, ::1] dU, saved) except -1

cdef object numpy_forward_step(CellCode code, a, u, prev, nxt)


cdef inline void bias_rows(floating *a, const floating *b, Py_ssize_t rows, Py_ssize_t n,
                           Py_ssize_t lda) noexcept nogil:
    """Rows [0, rows) of a (row stride lda) start as b (n values), for the products that add onto them."""
    cdef Py_ssize_t r
    for r in range(rows):
        memcpy(a + r * lda, b, n * sizeof(floating))


cdef inline void zero_rows(floating *a, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t lda) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(rows):
        memset(a + r * lda, 0, n * sizeof(floating))


cdef inline void *forward_function(CellCode code, floating kind) noexcept:
    """The cell's compiled forward for this precision, or NULL: its numpy part is called back."""
    return code.forward_f32 if floating is float else code.forward_f64


cdef inline void *backward_function(CellCode code, floating kind) noexcept:
    """The cell's compiled backward for this precision, or NULL: its numpy part is called back."""
    return code.backward_f32 if floating is float else code.backward_f64
