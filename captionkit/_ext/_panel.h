/* Matrix products C (m, n) += op(A) (m, k) @ B (k, n) with B packed into panels: the few-row products of a time
 * step, B packed once per sequence, and (where OpenBLAS runs narrower kernels than these) every other product.
 *
 * A time loop multiplies a handful of rows (the batch) by the same recurrent matrix at every step. A general BLAS
 * gemm repacks that matrix on every call, and with 12-50 rows the repacking costs as much as the arithmetic. Here
 * B is packed once, into column panels of CK_PANEL_F (float) or CK_PANEL_D (double) columns stored one after the
 * other, each panel k rows deep and contiguous, zero-padded past column n. A step then streams the panels from
 * cache while a tile of up to CK_TILE_ROWS rows of C stays in registers: 14 rows x 2 AVX-512 vectors, 28
 * accumulators of the 32 registers (a shard of 13 rows then runs as one tile; 12-row tiles measured 5-12% slower).
 *
 * The products are compiled for AVX-512 only (x86-64-v4); ck_panel_available() says whether this CPU and compiler
 * have it, and the callers use BLAS otherwise. All matrices are row-major with explicit row strides.
 */
#ifndef CAPTIONKIT_PANEL_H
#define CAPTIONKIT_PANEL_H

#include <string.h>
#include "Python.h"

#define CK_PANEL_F 32
#define CK_PANEL_D 16
#define CK_TILE_ROWS 14
#define CK_GROUP_TILES 4 /* tiles that share one pass over B; the work space holds their rows of A */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CK_PANEL_COMPILED 1
#define CK_V4 __attribute__((target("arch=x86-64-v4")))
#else
#define CK_PANEL_COMPILED 0
#define CK_V4
#endif

static inline int ck_panel_available(void)
{
#if CK_PANEL_COMPILED
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

/* Length of the packed form of a (k, n) matrix followed by the work space a product needs, in elements. */
static inline Py_ssize_t ck_packed_size_f(Py_ssize_t k, Py_ssize_t n)
{
    return (n + CK_PANEL_F - 1) / CK_PANEL_F * CK_PANEL_F * k + CK_GROUP_TILES * CK_TILE_ROWS * k;
}

static inline Py_ssize_t ck_packed_size_d(Py_ssize_t k, Py_ssize_t n)
{
    return (n + CK_PANEL_D - 1) / CK_PANEL_D * CK_PANEL_D * k + CK_GROUP_TILES * CK_TILE_ROWS * k;
}

/* Pack B (k, n) into panels. With trans set, the matrix given is B's transpose (n, k) with row stride ldb: the
 * backward pass multiplies by Wh^T and packs it straight from Wh. A whole panel row is one fixed-size copy (which
 * the compiler turns into vector moves rather than a call to memcpy); a transposed panel is filled in blocks of
 * CK_PACK_BLOCK columns of B, reading each of the panel's rows of the given matrix in order: gathering one element
 * of every row per column made packing Wh^T take as long as two time steps. */
#define CK_PACK_BLOCK 16
#define CK_DEFINE_PACK(SUFFIX, TYPE, PANEL)                                                                      \
    static void ck_pack_##SUFFIX(Py_ssize_t k, Py_ssize_t n, const TYPE *b, Py_ssize_t ldb, int trans, TYPE *bp) \
    {                                                                                                            \
        for (Py_ssize_t j0 = 0; j0 < n; j0 += PANEL) {                                                           \
            Py_ssize_t width = n - j0 < PANEL ? n - j0 : PANEL;                                                  \
            TYPE *panel = bp + j0 * k;                                                                           \
            if (width < PANEL) /* the last panel, cut short by n: zero padding past column n */                  \
                memset(panel, 0, k * PANEL * sizeof(TYPE));                                                      \
            if (!trans) {                                                                                        \
                for (Py_ssize_t p = 0; p < k; p++) {                                                             \
                    if (width == PANEL)                                                                          \
                        memcpy(panel + p * PANEL, b + p * ldb + j0, PANEL * sizeof(TYPE));                       \
                    else                                                                                         \
                        memcpy(panel + p * PANEL, b + p * ldb + j0, width * sizeof(TYPE));                       \
                }                                                                                                \
                continue;                                                                                        \
            }                                                                                                    \
            for (Py_ssize_t p0 = 0; p0 < k; p0 += CK_PACK_BLOCK) {                                               \
                Py_ssize_t p1 = p0 + CK_PACK_BLOCK < k ? p0 + CK_PACK_BLOCK : k;                                 \
                for (Py_ssize_t j = 0; j < width; j++) {                                                         \
                    const TYPE *src = b + (j0 + j) * ldb;                                                        \
                    for (Py_ssize_t p = p0; p < p1; p++)                                                         \
                        panel[p * PANEL + j] = src[p];                                                           \
                }                                                                                                \
            }                                                                                                    \
        }                                                                                                        \
    }
CK_DEFINE_PACK(f, float, CK_PANEL_F)
CK_DEFINE_PACK(d, double, CK_PANEL_D)

#if CK_PANEL_COMPILED

typedef float ck_v16f __attribute__((vector_size(64), aligned(4)));
typedef double ck_v8d __attribute__((vector_size(64), aligned(8)));

/* One tile: C rows [0, R) x one panel (two vectors wide) += A rows [0, R) @ the panel, with the tile of A stored
 * interleaved (ap[p * R + r] = A[r, p]) so its broadcasts read one contiguous stream. The accumulators live in
 * registers for the whole k loop; loads and stores go through memcpy because no row is assumed aligned. */
#define CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, R)                                                              \
    static inline __attribute__((always_inline)) CK_V4 void ck_tile##R##_##SUFFIX(                              \
        Py_ssize_t k, const TYPE *ap, const TYPE *panel, TYPE *c, Py_ssize_t ldc)                               \
    {                                                                                                            \
        VEC lo[R], hi[R];                                                                                        \
        _Pragma("GCC unroll 14") for (int r = 0; r < R; r++)                                                     \
        {                                                                                                        \
            memcpy(&lo[r], c + r * ldc, sizeof(VEC));                                                            \
            memcpy(&hi[r], c + r * ldc + LANES, sizeof(VEC));                                                    \
        }                                                                                                        \
        for (Py_ssize_t p = 0; p < k; p++) {                                                                     \
            VEC b0, b1;                                                                                          \
            memcpy(&b0, panel + p * 2 * LANES, sizeof(VEC));                                                     \
            memcpy(&b1, panel + p * 2 * LANES + LANES, sizeof(VEC));                                             \
            _Pragma("GCC unroll 14") for (int r = 0; r < R; r++)                                                 \
            {                                                                                                    \
                TYPE s = ap[p * R + r];                                                                          \
                lo[r] += s * b0;                                                                                 \
                hi[r] += s * b1;                                                                                 \
            }                                                                                                    \
        }                                                                                                        \
        _Pragma("GCC unroll 14") for (int r = 0; r < R; r++)                                                     \
        {                                                                                                        \
            memcpy(c + r * ldc, &lo[r], sizeof(VEC));                                                            \
            memcpy(c + r * ldc + LANES, &hi[r], sizeof(VEC));                                                    \
        }                                                                                                        \
    }

#define CK_DEFINE_TILES(SUFFIX, TYPE, VEC, LANES)       \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 1)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 2)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 3)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 4)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 5)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 6)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 7)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 8)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 9)         \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 10)        \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 11)        \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 12)        \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 13)        \
    CK_DEFINE_TILE(SUFFIX, TYPE, VEC, LANES, 14)
CK_DEFINE_TILES(f, float, ck_v16f, 16)
CK_DEFINE_TILES(d, double, ck_v8d, 8)

/* Rows [0, R) of A (R x k, row stride lda; or given as its transpose, k x R, with trans) into tile[p * R + r]. Row by
 * row in blocks of CK_GATHER columns, so that each row is read in order and the block of the tile being written
 * stays in L1: walking all the rows for one column at a time touched a cache line of every row per column, and took
 * as long as the product of a large matrix. */
#define CK_GATHER 64
#define CK_DEFINE_GATHER(SUFFIX, TYPE)                                                                           \
    static inline void ck_gather_##SUFFIX(int R, Py_ssize_t k, const TYPE *a, Py_ssize_t lda, int trans,         \
                                          TYPE *tile)                                                            \
    {                                                                                                            \
        if (trans) { /* column p of op(A) is a row of the given matrix: read in order as it is */               \
            for (Py_ssize_t p = 0; p < k; p++)                                                                   \
                for (int r = 0; r < R; r++)                                                                      \
                    tile[p * R + r] = a[p * lda + r];                                                            \
            return;                                                                                              \
        }                                                                                                        \
        for (Py_ssize_t p0 = 0; p0 < k; p0 += CK_GATHER) {                                                       \
            Py_ssize_t p1 = p0 + CK_GATHER < k ? p0 + CK_GATHER : k;                                             \
            for (int r = 0; r < R; r++)                                                                          \
                for (Py_ssize_t p = p0; p < p1; p++)                                                             \
                    tile[p * R + r] = a[r * lda + p];                                                            \
        }                                                                                                        \
    }
CK_DEFINE_GATHER(f, float)
CK_DEFINE_GATHER(d, double)

/* A tile of `rows` rows over one panel; a panel cut short by n goes through a scratch tile so that C is never
 * read or written past column n. */
#define CK_DEFINE_PANEL_GEMM(SUFFIX, TYPE, PANEL)                                                                \
    static CK_V4 void ck_tile_##SUFFIX(int rows, Py_ssize_t k, const TYPE *ap, const TYPE *panel, TYPE *c,       \
                                       Py_ssize_t ldc)                                                           \
    {                                                                                                            \
        switch (rows) {                                                                                          \
        case 1: ck_tile1_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 2: ck_tile2_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 3: ck_tile3_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 4: ck_tile4_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 5: ck_tile5_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 6: ck_tile6_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 7: ck_tile7_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 8: ck_tile8_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 9: ck_tile9_##SUFFIX(k, ap, panel, c, ldc); break;                                              \
        case 10: ck_tile10_##SUFFIX(k, ap, panel, c, ldc); break;                                            \
        case 11: ck_tile11_##SUFFIX(k, ap, panel, c, ldc); break;                                            \
        case 12: ck_tile12_##SUFFIX(k, ap, panel, c, ldc); break;                                            \
        case 13: ck_tile13_##SUFFIX(k, ap, panel, c, ldc); break;                                            \
        default: ck_tile14_##SUFFIX(k, ap, panel, c, ldc); break;                                            \
        }                                                                                                        \
    }                                                                                                            \
                                                                                                                 \
    static CK_V4 void ck_panel_gemm_##SUFFIX(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const TYPE *a,           \
                                             Py_ssize_t lda, int trans_a, TYPE *bp, TYPE *c, Py_ssize_t ldc)     \
    {                                                                                                            \
        TYPE *work = bp + (n + PANEL - 1) / PANEL * PANEL * k; /* the packed buffer's tail, see ck_packed_size */  \
        TYPE scratch[CK_TILE_ROWS * PANEL];                                                                      \
        int rows[CK_GROUP_TILES];                                                                                \
        /* Rows in near-equal groups of at most CK_GROUP_TILES tiles, each group's tiles near-equal too (15 rows \
         * run as 8 + 7, not 14 + 1). A group's tiles are copied to the work space once, then every panel of B    \
         * is read once for all of them: B streams through the cache once per group, not once per tile. */       \
        Py_ssize_t groups = (m + CK_GROUP_TILES * CK_TILE_ROWS - 1) / (CK_GROUP_TILES * CK_TILE_ROWS);            \
        for (Py_ssize_t g = 0, g0 = 0; g < groups; g++) {                                                        \
            Py_ssize_t group_rows = (m - g0) / (groups - g);                                                     \
            int tiles = (int)((group_rows + CK_TILE_ROWS - 1) / CK_TILE_ROWS);                                   \
            for (int t = 0, i0 = 0; t < tiles; t++) {                                                            \
                rows[t] = (int)((group_rows - i0) / (tiles - t));                                                \
                /* Interleaved (work[p * rows + r]); the rows of a time step sit T * H elements apart in A,     \
                 * which would make them share cache sets. With trans_a, A is given as its transpose (k, m). */  \
                ck_gather_##SUFFIX(rows[t], k, trans_a ? a + g0 + i0 : a + (g0 + i0) * lda, lda, trans_a,         \
                                   work + i0 * k);                                                               \
                i0 += rows[t];                                                                                   \
            }                                                                                                    \
            for (Py_ssize_t j0 = 0; j0 < n; j0 += PANEL) {                                                       \
                const TYPE *panel = bp + j0 * k;                                                                 \
                Py_ssize_t width = n - j0 < PANEL ? n - j0 : PANEL;                                              \
                for (int t = 0, i0 = 0; t < tiles; t++) {                                                        \
                    TYPE *ct = c + (g0 + i0) * ldc + j0;                                                         \
                    if (width == PANEL) {                                                                        \
                        ck_tile_##SUFFIX(rows[t], k, work + i0 * k, panel, ct, ldc);                             \
                    } else { /* a panel cut short by n: through a scratch tile, never past column n of C */     \
                        for (int r = 0; r < rows[t]; r++) {                                                      \
                            memcpy(scratch + r * PANEL, ct + r * ldc, width * sizeof(TYPE));                     \
                            memset(scratch + r * PANEL + width, 0, (PANEL - width) * sizeof(TYPE));              \
                        }                                                                                        \
                        ck_tile_##SUFFIX(rows[t], k, work + i0 * k, panel, scratch, PANEL);                      \
                        for (int r = 0; r < rows[t]; r++)                                                        \
                            memcpy(ct + r * ldc, scratch + r * PANEL, width * sizeof(TYPE));                     \
                    }                                                                                            \
                    i0 += rows[t];                                                                               \
                }                                                                                                \
            }                                                                                                    \
            g0 += group_rows;                                                                                    \
        }                                                                                                        \
    }
CK_DEFINE_PANEL_GEMM(f, float, CK_PANEL_F)
CK_DEFINE_PANEL_GEMM(d, double, CK_PANEL_D)

#else /* no AVX-512 build: never called, since ck_panel_available() is 0 */

static void ck_panel_gemm_f(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda, int trans_a,
                            float *bp, float *c, Py_ssize_t ldc) {}
static void ck_panel_gemm_d(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double *a, Py_ssize_t lda, int trans_a,
                            double *bp, double *c, Py_ssize_t ldc) {}

#endif
#endif
