/* bfloat16 matrix products C (m, n) (+)= op(A) (m, k) @ B (k, n): inputs rounded to bfloat16, products and sums in
 * float32 (torch.autocast's semantics for a product), on AVX512-BF16's vdpbf16ps or on AMX's tdpbf16ps.
 *
 * The layout is _panel.h's, with pairs of rows of B interleaved, because vdpbf16ps multiplies pairs: in each of its
 * 16 float32 lanes it adds a[2i] * b[2i] + a[2i+1] * b[2i+1], both operands pairs of bfloat16 packed in 32 bits. B
 * is packed (and rounded) once into column panels of CK_BF16_PANEL columns, each panel ceil(k / 2) pair-rows of
 * 64 bfloat16: column j's B[2p, j] and B[2p+1, j] side by side. A tile of up to CK_BF16_TILE_ROWS rows of C stays in
 * registers (14 rows x 2 vectors: 28 accumulators of the 32) while a panel streams past; each row of A contributes
 * one broadcast pair per pair-row. An odd k is padded with a zero row of B and a zero column of A, and each panel
 * with zero pair-rows up to a multiple of CK_BF16_AMX_PAIRS (ck_bf16_depth), the depth of one AMX tile.
 *
 * AMX multiplies tiles: tdpbf16ps adds a (16 x 16 pairs) tile of A times a (16 pairs x 16 columns) tile of B into a
 * 16 x 16 float32 tile, the same pair arithmetic as vdpbf16ps 256 times over. A tile of B is the panel's layout
 * already (16 pair-rows of 16 columns, row stride one panel row), so both kernels read the same packed B; the rows
 * of A are rounded into tile order instead of broadcast order. Where the CPU has both, AMX runs: on the Intel Xeon
 * of docs/benchmarks.md, vdpbf16ps runs at half the float32 FMA rate (108 against 217 GFLOP/s per core), tdpbf16ps
 * at 3.2 TFLOP/s.
 *
 * Unlike _panel.h, the packed B holds nothing else: the rows of A, rounded and interleaved, go to a separate work
 * space (ck_bf16_work_size), so one packed B can be read by every thread at once (weights packed once per update).
 *
 * Rounding is round to nearest even on the float32 bits, NaN kept (quiet, sign kept), as torch's
 * tensor.to(torch.bfloat16) and captionkit.precision.round_to_bf16 do. vdpbf16ps and tdpbf16ps themselves treat
 * subnormal inputs as zero and flush subnormal results to zero, whatever MXCSR says: a value below 2**-126 in
 * magnitude contributes nothing (oneDNN and torch multiply on the same instructions).
 *
 * The products are compiled with a function-level target attribute, so the rest of captionkit builds for any x86-64;
 * ck_bf16_available() says whether this CPU, its OS and the compiler have AVX512-BF16, and nothing here may be called
 * when it is 0. The AMX kernel also needs the tile state, which Linux grants a process that asks
 * (ck_bf16_amx_available asks); each call loads its tile configuration and releases the tiles on return, so the
 * threads that call it need no set-up of their own. ck_bf16_use() chooses the kernel for the whole process (it is
 * _bf16.pyx's alone; every other module multiplies through _bf16.pxd). All matrices are row-major with explicit
 * row strides.
 */
#ifndef CAPTIONKIT_BF16_H
#define CAPTIONKIT_BF16_H

#include <stdint.h>
#include <string.h>
#include "Python.h"
#include "_cpu.h"

#define CK_BF16_PANEL 32
#define CK_BF16_TILE_ROWS 14
#define CK_BF16_GROUP_TILES 4 /* tiles that share one pass over B, as in _panel.h */
#define CK_BF16_AMX_PAIRS 16  /* pairs in a row of an AMX tile of A (64 bytes), pair-rows in a tile of B */
#define CK_BF16_AMX_ROWS 32   /* rows of C per AMX block: two tiles of A, which share each pair of tiles of B */

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10 && defined(__x86_64__)
#define CK_BF16_COMPILED 1
#include <immintrin.h>
#define CK_BF16_TARGET __attribute__((target("arch=x86-64-v4,avx512bf16")))
#define CK_BF16_AMX_TARGET __attribute__((target("arch=x86-64-v4,avx512bf16,amx-tile,amx-bf16")))
#define CK_BF16_AMX_COMPILED (__GNUC__ >= 11) /* AMX's intrinsics came with GCC 11 */
#else
#define CK_BF16_COMPILED 0
#define CK_BF16_AMX_COMPILED 0
#endif

static inline int ck_bf16_available(void)
{
#if CK_BF16_COMPILED
    /* libgcc's answer includes the OS's: it reports AVX-512 features only where XCR0 has the ZMM state enabled. */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

/* AMX-BF16 with its tile state granted to this process (asked once, on the first call; the grant is for the
 * process, every thread included). */
static inline int ck_bf16_amx_available(void)
{
#if CK_BF16_AMX_COMPILED && defined(__linux__)
    static int granted = -1;
    if (granted < 0) {
        unsigned int regs[4];
        const uint64_t tile_state = 3u << 17; /* XCR0: tile configuration and tile data */
        int in_cpu = ck_cpuid(7, 0, regs) && (regs[3] >> 22 & 1u) && (regs[3] >> 24 & 1u);
        granted = in_cpu && (ck_xcr0() & tile_state) == tile_state
                  && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
    }
    return granted;
#else
    return 0;
#endif
}

/* The kernel every product of this process runs, chosen by ck_bf16_use (the best one available by default). */
enum { CK_BF16_NO_KERNEL = 0, CK_BF16_VDPBF16PS = 1, CK_BF16_AMX = 2 };
static int ck_bf16_kernel = -1; /* not chosen yet */

static inline int ck_bf16_kernel_available(int kernel)
{
    return (kernel == CK_BF16_VDPBF16PS && ck_bf16_available())
           || (kernel == CK_BF16_AMX && ck_bf16_available() && ck_bf16_amx_available());
}

/* Run `kernel` from now on: 1, or 0 (and no change) when this CPU cannot. Not while products run. */
static inline int ck_bf16_use(int kernel)
{
    if (!ck_bf16_kernel_available(kernel))
        return 0;
    ck_bf16_kernel = kernel;
    return 1;
}

static inline int ck_bf16_kernel_in_use(void)
{
    if (ck_bf16_kernel < 0 && !ck_bf16_use(CK_BF16_AMX) && !ck_bf16_use(CK_BF16_VDPBF16PS))
        ck_bf16_kernel = CK_BF16_NO_KERNEL;
    return ck_bf16_kernel;
}

static inline Py_ssize_t ck_bf16_pairs(Py_ssize_t k) { return (k + 1) / 2; }

/* Pair-rows of each packed panel: the pairs of k, padded with zeros to whole AMX tiles. */
static inline Py_ssize_t ck_bf16_depth(Py_ssize_t k)
{
    return (ck_bf16_pairs(k) + CK_BF16_AMX_PAIRS - 1) / CK_BF16_AMX_PAIRS * CK_BF16_AMX_PAIRS;
}

/* bfloat16 elements (uint16) of the packed form of a (k, n) matrix. */
static inline Py_ssize_t ck_bf16_packed_size(Py_ssize_t k, Py_ssize_t n)
{
    return (n + CK_BF16_PANEL - 1) / CK_BF16_PANEL * CK_BF16_PANEL * 2 * ck_bf16_depth(k);
}

/* Pairs (uint32) of the work space a product of m rows and depth k needs, whichever kernel runs it: a group's rows
 * of A, rounded and interleaved for vdpbf16ps, or an AMX block's rows of A in tile order (either way no more rows
 * than m, so that a one-row product does not allocate for a group). */
static inline Py_ssize_t ck_bf16_work_size(Py_ssize_t m, Py_ssize_t k)
{
    Py_ssize_t group = (Py_ssize_t)CK_BF16_GROUP_TILES * CK_BF16_TILE_ROWS;
    Py_ssize_t broadcast = (m < group ? m : group) * ck_bf16_pairs(k);
    Py_ssize_t tiles = (m < CK_BF16_AMX_ROWS ? m : CK_BF16_AMX_ROWS) * ck_bf16_depth(k);
    return broadcast > tiles ? broadcast : tiles;
}

/* float32 -> bfloat16 bits: adding 0x7FFF plus the lowest kept bit carries into the kept bits exactly when the
 * dropped half is above a tie, or a tie with the kept part odd. A NaN would carry into the exponent, so it keeps
 * its high half with the quiet bit set. Written as a select, so that loops of it vectorize. */
static inline uint16_t ck_bf16_round(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (bits >> 16) | 0x0040u;
    return (uint16_t)((bits & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

static inline uint32_t ck_bf16_pair(float even, float odd)
{
    return (uint32_t)ck_bf16_round(even) | (uint32_t)ck_bf16_round(odd) << 16;
}

#if CK_BF16_COMPILED

/* Sixteen float32 (as their bits) rounded to bfloat16 and left in the high half of each 32-bit lane, the select of
 * ck_bf16_round on vectors. */
static inline __attribute__((always_inline)) CK_BF16_TARGET __m512i ck_bf16_round_high(__m512i bits)
{
    __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lowest_kept, _mm512_set1_epi32(0x7FFF)));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF)),
                                            _mm512_set1_epi32(0x7F800000));
    return _mm512_mask_or_epi32(rounded, nan, bits, _mm512_set1_epi32(0x00400000));
}

/* The lanes of 16 consecutive floats that lie before `columns` (none when it is 0 or less). */
static inline __mmask16 ck_bf16_lanes(Py_ssize_t columns)
{
    return columns >= 16 ? 0xFFFF : columns > 0 ? (__mmask16)((1u << columns) - 1) : 0;
}

/* The 16 pairs of 32 consecutive floats of a row, columns past `columns` read as zeros (never loaded). */
static inline __attribute__((always_inline)) CK_BF16_TARGET __m512i ck_bf16_row_pairs(const float *row,
                                                                                      Py_ssize_t columns)
{
    /* word i of the result: the high half of lane i of the first 16 floats' rounding, then of the second 16's */
    const __m512i high_halves = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33,
                                                 31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    __m512i lo = ck_bf16_round_high(_mm512_maskz_loadu_epi32(ck_bf16_lanes(columns), row));
    __m512i hi = ck_bf16_round_high(_mm512_maskz_loadu_epi32(ck_bf16_lanes(columns - 16), row + 16));
    return _mm512_permutex2var_epi16(lo, high_halves, hi);
}

/* Transpose 16 x 16 32-bit lanes in registers: on return v[c] holds lane c of each of the 16 given vectors. Pairs of
 * rows interleave by 32 and then 64 bits (u[4i + c] has, in its 128-bit block b, rows 4i..4i+3 of column 4b + c),
 * then the 128-bit blocks of each group of four go across (a 4 x 4 transpose of blocks). */
static inline __attribute__((always_inline)) CK_BF16_TARGET void ck_bf16_transpose16(__m512i v[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int c = 0; c < 4; c++) {
        __m512i ab01 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44);
        __m512i cd01 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
        __m512i ab23 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
        __m512i cd23 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
        v[c] = _mm512_shuffle_i32x4(ab01, cd01, 0x88);
        v[4 + c] = _mm512_shuffle_i32x4(ab01, cd01, 0xDD);
        v[8 + c] = _mm512_shuffle_i32x4(ab23, cd23, 0x88);
        v[12 + c] = _mm512_shuffle_i32x4(ab23, cd23, 0xDD);
    }
}

/* 16 pairs (even[j], odd[j]) of two rows' consecutive floats, rounded, even in the low half; columns past `columns`
 * (at most 16 are read) and a missing odd row (NULL) are zeros. */
static inline __attribute__((always_inline)) CK_BF16_TARGET __m512i ck_bf16_pairs16(const float *even, const float *odd,
                                                                                    Py_ssize_t columns)
{
    __mmask16 mask = ck_bf16_lanes(columns);
    __m512i lo = ck_bf16_round_high(_mm512_maskz_loadu_epi32(mask, even));
    __m512i hi = odd ? ck_bf16_round_high(_mm512_maskz_loadu_epi32(mask, odd)) : _mm512_setzero_si512();
    return _mm512_or_si512(_mm512_srli_epi32(lo, 16), _mm512_and_si512(hi, _mm512_set1_epi32((int)0xFFFF0000u)));
}

/* Pack B (k, n), rounded, into panels of pair-rows. The plain form goes pair-row by pair-row of B, reading its two
 * rows in order and writing 16 pairs at a time into each panel's row (the masked loads zero the last panel's
 * columns past n). With trans set, the matrix given is B's transpose (n, k) with row stride ldb, whose rows hold
 * each pair side by side: the backward pass multiplies by W^T and packs it from W. The transposed form goes in
 * blocks of 16 rows of the given matrix x 16 pairs: each row's 32 floats are rounded into one vector of pairs, and
 * the 16 vectors transposed in registers into 16 pair-rows of the panel (pair by pair, the transposed form took six
 * times as long as the plain one). Both write the padding pair-rows past ck_bf16_pairs(k) as zeros. */
static CK_BF16_TARGET void ck_bf16_pack(Py_ssize_t k, Py_ssize_t n, const float *b, Py_ssize_t ldb, int trans,
                                        uint16_t *bp)
{
    Py_ssize_t pairs = ck_bf16_pairs(k), depth = ck_bf16_depth(k);
    for (Py_ssize_t j0 = 0; j0 < n; j0 += CK_BF16_PANEL) /* pair-row p of a panel: panel[p * PANEL + j] */
        memset((uint32_t *)(bp + 2 * j0 * depth) + pairs * CK_BF16_PANEL, 0,
               (depth - pairs) * CK_BF16_PANEL * sizeof(uint32_t));
    if (!trans) {
        for (Py_ssize_t p = 0; p < pairs; p++) {
            const float *even = b + 2 * p * ldb, *odd = 2 * p + 1 < k ? even + ldb : NULL;
            for (Py_ssize_t j0 = 0; j0 < n; j0 += CK_BF16_PANEL) {
                uint32_t *row = (uint32_t *)(bp + 2 * j0 * depth) + p * CK_BF16_PANEL;
                _mm512_storeu_si512(row, ck_bf16_pairs16(even + j0, odd ? odd + j0 : NULL, n - j0));
                _mm512_storeu_si512(row + 16, ck_bf16_pairs16(even + j0 + 16, odd ? odd + j0 + 16 : NULL,
                                                              n - j0 - 16));
            }
        }
        return;
    }
    for (Py_ssize_t j0 = 0; j0 < n; j0 += CK_BF16_PANEL) {
        Py_ssize_t width = n - j0 < CK_BF16_PANEL ? n - j0 : CK_BF16_PANEL;
        uint32_t *panel = (uint32_t *)(bp + 2 * j0 * depth);
        for (Py_ssize_t jb = 0; jb < CK_BF16_PANEL; jb += 16) {
            Py_ssize_t rows = width - jb < 0 ? 0 : width - jb < 16 ? width - jb : 16; /* the rest: zero padding */
            for (Py_ssize_t p0 = 0; p0 < pairs; p0 += 16) {
                __m512i v[16];
                for (int r = 0; r < 16; r++)
                    v[r] = r < rows ? ck_bf16_row_pairs(b + (j0 + jb + r) * ldb + 2 * p0, k - 2 * p0)
                                    : _mm512_setzero_si512();
                ck_bf16_transpose16(v);
                Py_ssize_t block_pairs = pairs - p0 < 16 ? pairs - p0 : 16;
                for (Py_ssize_t c = 0; c < block_pairs; c++)
                    _mm512_storeu_si512(panel + (p0 + c) * CK_BF16_PANEL + jb, v[c]);
            }
        }
    }
}

/* Rows [0, R) of op(A) (R x k; A given as R x k with row stride lda, or as its transpose k x R with trans), rounded,
 * into tile[p * R + r] = the pair (A[r, 2p], A[r, 2p+1]). Without trans, each row goes in blocks of CK_BF16_GATHER
 * pairs: the block is rounded into a contiguous buffer (a loop the compiler vectorizes), then its pairs stored to
 * their interleaved places; rounding and storing pair by pair took a tenth of an 800 x 1004 x 512 product. */
#define CK_BF16_GATHER 64
static CK_BF16_TARGET void ck_bf16_gather(int R, Py_ssize_t k, const float *a, Py_ssize_t lda, int trans,
                                          uint32_t *tile)
{
    Py_ssize_t pairs = ck_bf16_pairs(k);
    if (trans) { /* columns 2p and 2p + 1 of op(A) are rows of the given matrix, read in order */
        for (Py_ssize_t p = 0; p < pairs; p++) {
            const float *even = a + 2 * p * lda;
            if (2 * p + 1 < k) {
                const float *odd = even + lda;
                for (int r = 0; r < R; r++)
                    tile[p * R + r] = ck_bf16_pair(even[r], odd[r]);
            } else {
                for (int r = 0; r < R; r++)
                    tile[p * R + r] = ck_bf16_round(even[r]);
            }
        }
        return;
    }
    uint16_t rounded[2 * CK_BF16_GATHER];
    for (Py_ssize_t p0 = 0; p0 < pairs; p0 += CK_BF16_GATHER) {
        Py_ssize_t p1 = p0 + CK_BF16_GATHER < pairs ? p0 + CK_BF16_GATHER : pairs;
        Py_ssize_t columns = 2 * p1 <= k ? 2 * (p1 - p0) : k - 2 * p0;
        rounded[2 * (p1 - p0) - 1] = 0; /* the odd k's zero column, unless a value overwrites it */
        for (int r = 0; r < R; r++) {
            const float *row = a + r * lda + 2 * p0;
            for (Py_ssize_t q = 0; q < columns; q++)
                rounded[q] = ck_bf16_round(row[q]);
            for (Py_ssize_t p = p0; p < p1; p++) {
                uint32_t pair;
                memcpy(&pair, rounded + 2 * (p - p0), sizeof pair);
                tile[p * R + r] = pair;
            }
        }
    }
}

/* One tile: C rows [0, R) x one panel (two vectors wide) += the tile of A @ the panel, accumulators in registers for
 * the whole depth. */
#define CK_BF16_DEFINE_TILE(R)                                                                                   \
    static inline __attribute__((always_inline)) CK_BF16_TARGET void ck_bf16_tile##R(                           \
        Py_ssize_t pairs, const uint32_t *ap, const uint16_t *panel, int accumulate, float *c, Py_ssize_t ldc)  \
    {                                                                                                            \
        __m512 lo[R], hi[R];                                                                                     \
        _Pragma("GCC unroll 14") for (int r = 0; r < R; r++)                                                     \
        {                                                                                                        \
            lo[r] = accumulate ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();                             \
            hi[r] = accumulate ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();                        \
        }                                                                                                        \
        for (Py_ssize_t p = 0; p < pairs; p++) {                                                                 \
            __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + p * 2 * CK_BF16_PANEL);                           \
            __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + p * 2 * CK_BF16_PANEL + CK_BF16_PANEL);           \
            _Pragma("GCC unroll 14") for (int r = 0; r < R; r++)                                                 \
            {                                                                                                    \
                __m512bh s = (__m512bh)_mm512_set1_epi32((int)ap[p * R + r]);                                    \
                lo[r] = _mm512_dpbf16_ps(lo[r], s, b0);                                                          \
                hi[r] = _mm512_dpbf16_ps(hi[r], s, b1);                                                          \
            }                                                                                                    \
        }                                                                                                        \
        _Pragma("GCC unroll 14") for (int r = 0; r < R; r++)                                                     \
        {                                                                                                        \
            _mm512_storeu_ps(c + r * ldc, lo[r]);                                                                \
            _mm512_storeu_ps(c + r * ldc + 16, hi[r]);                                                           \
        }                                                                                                        \
    }
CK_BF16_DEFINE_TILE(1)
CK_BF16_DEFINE_TILE(2)
CK_BF16_DEFINE_TILE(3)
CK_BF16_DEFINE_TILE(4)
CK_BF16_DEFINE_TILE(5)
CK_BF16_DEFINE_TILE(6)
CK_BF16_DEFINE_TILE(7)
CK_BF16_DEFINE_TILE(8)
CK_BF16_DEFINE_TILE(9)
CK_BF16_DEFINE_TILE(10)
CK_BF16_DEFINE_TILE(11)
CK_BF16_DEFINE_TILE(12)
CK_BF16_DEFINE_TILE(13)
CK_BF16_DEFINE_TILE(14)

static CK_BF16_TARGET void ck_bf16_tile(int rows, Py_ssize_t pairs, const uint32_t *ap, const uint16_t *panel,
                                        int accumulate, float *c, Py_ssize_t ldc)
{
    switch (rows) {
    case 1: ck_bf16_tile1(pairs, ap, panel, accumulate, c, ldc); break;
    case 2: ck_bf16_tile2(pairs, ap, panel, accumulate, c, ldc); break;
    case 3: ck_bf16_tile3(pairs, ap, panel, accumulate, c, ldc); break;
    case 4: ck_bf16_tile4(pairs, ap, panel, accumulate, c, ldc); break;
    case 5: ck_bf16_tile5(pairs, ap, panel, accumulate, c, ldc); break;
    case 6: ck_bf16_tile6(pairs, ap, panel, accumulate, c, ldc); break;
    case 7: ck_bf16_tile7(pairs, ap, panel, accumulate, c, ldc); break;
    case 8: ck_bf16_tile8(pairs, ap, panel, accumulate, c, ldc); break;
    case 9: ck_bf16_tile9(pairs, ap, panel, accumulate, c, ldc); break;
    case 10: ck_bf16_tile10(pairs, ap, panel, accumulate, c, ldc); break;
    case 11: ck_bf16_tile11(pairs, ap, panel, accumulate, c, ldc); break;
    case 12: ck_bf16_tile12(pairs, ap, panel, accumulate, c, ldc); break;
    case 13: ck_bf16_tile13(pairs, ap, panel, accumulate, c, ldc); break;
    default: ck_bf16_tile14(pairs, ap, panel, accumulate, c, ldc); break;
    }
}

/* C (m, n) (+)= op(A) (m, k) @ B on vdpbf16ps (C's own values added only with accumulate), B packed by
 * ck_bf16_pack into bp, work holding ck_bf16_work_size(m, k) pairs. Rows go in near-equal groups of near-equal
 * tiles, and each panel of B is read once per group, as in _panel.h. */
static CK_BF16_TARGET void ck_bf16_gemm_vdpbf16ps(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a,
                                                  Py_ssize_t lda, int trans_a, const uint16_t *bp, uint32_t *work,
                                                  int accumulate, float *c, Py_ssize_t ldc)
{
    Py_ssize_t pairs = ck_bf16_pairs(k);
    float scratch[CK_BF16_TILE_ROWS * CK_BF16_PANEL];
    int rows[CK_BF16_GROUP_TILES];
    Py_ssize_t groups = (m + CK_BF16_GROUP_TILES * CK_BF16_TILE_ROWS - 1) / (CK_BF16_GROUP_TILES * CK_BF16_TILE_ROWS);
    for (Py_ssize_t g = 0, g0 = 0; g < groups; g++) {
        Py_ssize_t group_rows = (m - g0) / (groups - g);
        int tiles = (int)((group_rows + CK_BF16_TILE_ROWS - 1) / CK_BF16_TILE_ROWS);
        for (int t = 0, i0 = 0; t < tiles; t++) {
            rows[t] = (int)((group_rows - i0) / (tiles - t));
            ck_bf16_gather(rows[t], k, trans_a ? a + g0 + i0 : a + (g0 + i0) * lda, lda, trans_a, work + i0 * pairs);
            i0 += rows[t];
        }
        for (Py_ssize_t j0 = 0; j0 < n; j0 += CK_BF16_PANEL) {
            const uint16_t *panel = bp + 2 * j0 * ck_bf16_depth(k);
            Py_ssize_t width = n - j0 < CK_BF16_PANEL ? n - j0 : CK_BF16_PANEL;
            for (int t = 0, i0 = 0; t < tiles; t++) {
                float *ct = c + (g0 + i0) * ldc + j0;
                if (width == CK_BF16_PANEL) {
                    ck_bf16_tile(rows[t], pairs, work + i0 * pairs, panel, accumulate, ct, ldc);
                } else { /* a panel cut short by n: through a scratch tile, never past column n of C */
                    for (int r = 0; r < rows[t] && accumulate; r++) {
                        memcpy(scratch + r * CK_BF16_PANEL, ct + r * ldc, width * sizeof(float));
                        memset(scratch + r * CK_BF16_PANEL + width, 0, (CK_BF16_PANEL - width) * sizeof(float));
                    }
                    ck_bf16_tile(rows[t], pairs, work + i0 * pairs, panel, accumulate, scratch, CK_BF16_PANEL);
                    for (int r = 0; r < rows[t]; r++)
                        memcpy(ct + r * ldc, scratch + r * CK_BF16_PANEL, width * sizeof(float));
                }
                i0 += rows[t];
            }
        }
        g0 += group_rows;
    }
}

#if CK_BF16_AMX_COMPILED
/* Rows [0, R) of op(A) (R <= CK_BF16_AMX_ROWS; A given as R x k with row stride lda, or as its transpose k x R with
 * trans), rounded, into work tile by tile: for each 16 pairs from p0 on, the R rows' pairs one after the other,
 * work[p0 * R + 16 r + (p - p0)] the pair (A[r, 2p], A[r, 2p+1]), zero past column k. A tile of A (16 rows or the
 * block's fewer) is then one stretch of memory, read with a row stride of one cache line (with a row of A as the
 * stride, which puts a tile's rows in a few cache sets, products took 5-12% longer). Rows of the given A go in
 * blocks of 16 pairs (ck_bf16_row_pairs); a transposed A in blocks of 16 pairs x 16 rows: each pair of its rows
 * rounded into one vector of 16 pairs of op(A)'s rows, and the 16 vectors transposed in registers into rows of the
 * work space. */
static CK_BF16_AMX_TARGET void ck_bf16_amx_gather(int R, Py_ssize_t k, const float *a, Py_ssize_t lda, int trans,
                                                  uint32_t *work, Py_ssize_t depth)
{
    for (Py_ssize_t p0 = 0; p0 < depth; p0 += 16) {
        Py_ssize_t left = k - 2 * p0 > 0 ? k - 2 * p0 : 0; /* columns of op(A) from pair p0 on */
        if (!trans) {
            for (int r = 0; r < R; r++)
                _mm512_storeu_si512(work + p0 * R + 16 * r, ck_bf16_row_pairs(a + r * lda + 2 * p0, left));
            continue;
        }
        for (int r0 = 0; r0 < R; r0 += 16) {
            int width = R - r0 < 16 ? R - r0 : 16;
            __m512i v[16];
            for (int c = 0; c < 16; c++) {
                Py_ssize_t even = 2 * (p0 + c);
                v[c] = even < k ? ck_bf16_pairs16(a + even * lda + r0, even + 1 < k ? a + (even + 1) * lda + r0 : NULL,
                                                  width)
                                : _mm512_setzero_si512();
            }
            ck_bf16_transpose16(v);
            for (int r = 0; r < width; r++)
                _mm512_storeu_si512(work + p0 * R + 16 * (r0 + r), v[r]);
        }
    }
}

/* The palette-1 tile configuration (64 bytes, as ldtilecfg reads it). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} ck_bf16_tile_config;

/* Tiles for a block of C of rows[0] + rows[1] rows (rows[1] may be 0) x columns[0] + columns[1] columns (columns[1]
 * may be 0): accumulators 0, 1 (upper rows; left, right columns) and 2, 3 (lower rows), A's rows 4 (upper) and 5
 * (lower), B's columns 6 (left) and 7 (right), each 16 pairs deep. A tile of zero rows or columns stays
 * unconfigured and is never used. Tiles sized to the block read and write exactly its part of C, so an edge block
 * needs no copy (a copy through memory that a tile reads right after it is written, or the other way round, stalls
 * on the store: it cost more than the products of a 25-row block). */
static inline CK_BF16_AMX_TARGET void ck_bf16_amx_configure(const int rows[2], const int columns[2])
{
    ck_bf16_tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            if (rows[i] && columns[j]) {
                config.rows[2 * i + j] = (uint8_t)rows[i];
                config.bytes_per_row[2 * i + j] = (uint16_t)(columns[j] * sizeof(float));
            }
    for (int i = 0; i < 2; i++) {
        if (rows[i]) {
            config.rows[4 + i] = (uint8_t)rows[i];
            config.bytes_per_row[4 + i] = CK_BF16_AMX_PAIRS * sizeof(uint32_t);
        }
        if (columns[i]) {
            config.rows[6 + i] = CK_BF16_AMX_PAIRS;
            config.bytes_per_row[6 + i] = (uint16_t)(columns[i] * sizeof(uint32_t));
        }
    }
    /* ldtilecfg by hand: GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes, so stores to the rest of the
     * configuration may be dropped as dead (the tiles then fault); this operand is the whole 64 bytes. */
    __asm__ volatile("ldtilecfg %0" : : "m"(config));
}

/* The accumulator tiles of a block (ck_bf16_amx_configure's numbering), each given to `tile_op(tile, its corner in
 * C)`: 0 at `upper`, 1 right of it, 2 and 3 below them, those the block has (`right`, `lower_rows`). */
#define CK_BF16_EACH_ACCUMULATOR(tile_op)                                                                       \
    do {                                                                                                         \
        tile_op(0, upper);                                                                                       \
        if (right)                                                                                               \
            tile_op(1, upper + 16);                                                                              \
        if (lower_rows) {                                                                                        \
            tile_op(2, lower);                                                                                   \
            if (right)                                                                                           \
                tile_op(3, lower + 16);                                                                          \
        }                                                                                                        \
    } while (0)
#define CK_BF16_LOAD_TILE(tile, corner) _tile_loadd(tile, corner, stride)
#define CK_BF16_ZERO_TILE(tile, corner) _tile_zero(tile)
#define CK_BF16_STORE_TILE(tile, corner) _tile_stored(tile, corner, stride)

/* C (m, n) (+)= op(A) (m, k) @ B on AMX (C's own values added only with accumulate), B packed by ck_bf16_pack into
 * bp, work holding ck_bf16_work_size(m, k) pairs. Blocks of up to 32 rows x one panel (32 columns) of C stay in four
 * accumulator tiles for the whole depth, fed per 16 pairs by two tiles of A and two of B; a block at the edge of C
 * gets tiles of its own size (the configuration is loaded again only when the block's size changes: once per call
 * at most for the rows, once per row block for a panel cut short by n). */
static CK_BF16_AMX_TARGET void ck_bf16_gemm_amx(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a,
                                                Py_ssize_t lda, int trans_a, const uint16_t *bp, uint32_t *work,
                                                int accumulate, float *c, Py_ssize_t ldc)
{
    Py_ssize_t depth = ck_bf16_depth(k), stride = ldc * (Py_ssize_t)sizeof(float);
    const Py_ssize_t a_stride = CK_BF16_AMX_PAIRS * sizeof(uint32_t), b_stride = CK_BF16_PANEL * sizeof(uint32_t);
    int configured = -1; /* the tiles' block shape: rows[0] | rows[1] << 8 | columns[0] << 16 | columns[1] << 24 */
    for (Py_ssize_t i0 = 0; i0 < m; i0 += CK_BF16_AMX_ROWS) {
        int R = (int)(m - i0 < CK_BF16_AMX_ROWS ? m - i0 : CK_BF16_AMX_ROWS);
        int rows[2] = {R < 16 ? R : 16, R > 16 ? R - 16 : 0};
        ck_bf16_amx_gather(R, k, trans_a ? a + i0 : a + i0 * lda, lda, trans_a, work, depth);
        for (Py_ssize_t j0 = 0; j0 < n; j0 += CK_BF16_PANEL) {
            const uint32_t *panel = (const uint32_t *)(bp + 2 * j0 * depth);
            int width = (int)(n - j0 < CK_BF16_PANEL ? n - j0 : CK_BF16_PANEL);
            int columns[2] = {width < 16 ? width : 16, width > 16 ? width - 16 : 0};
            int shape = rows[0] | rows[1] << 8 | columns[0] << 16 | columns[1] << 24;
            if (shape != configured) {
                ck_bf16_amx_configure(rows, columns);
                configured = shape;
            }
            float *upper = c + i0 * ldc + j0, *lower = upper + 16 * ldc;
            int lower_rows = rows[1] > 0, right = columns[1] > 0;
            if (accumulate)
                CK_BF16_EACH_ACCUMULATOR(CK_BF16_LOAD_TILE);
            else /* C = A @ B: neither a pass of memset over C nor loading its zeros */
                CK_BF16_EACH_ACCUMULATOR(CK_BF16_ZERO_TILE);
            for (Py_ssize_t p0 = 0; p0 < depth; p0 += CK_BF16_AMX_PAIRS) {
                const uint32_t *b_tiles = panel + p0 * CK_BF16_PANEL;
                _tile_loadd(6, b_tiles, b_stride);
                _tile_loadd(4, work + p0 * R, a_stride);
                _tile_dpbf16ps(0, 4, 6);
                if (right) {
                    _tile_loadd(7, b_tiles + 16, b_stride);
                    _tile_dpbf16ps(1, 4, 7);
                }
                if (lower_rows) {
                    _tile_loadd(5, work + p0 * R + 16 * CK_BF16_AMX_PAIRS, a_stride);
                    _tile_dpbf16ps(2, 5, 6);
                    if (right)
                        _tile_dpbf16ps(3, 5, 7);
                }
            }
            CK_BF16_EACH_ACCUMULATOR(CK_BF16_STORE_TILE);
        }
    }
    _tile_release();
}

#endif

/* C (m, n) = op(A) (m, k) @ B, plus C's own values with accumulate, B packed by ck_bf16_pack into bp, work holding
 * ck_bf16_work_size(m, k) pairs, on the kernel ck_bf16_use chose. */
static void ck_bf16_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda, int trans_a,
                         const uint16_t *bp, uint32_t *work, int accumulate, float *c, Py_ssize_t ldc)
{
#if CK_BF16_AMX_COMPILED
    if (ck_bf16_kernel_in_use() == CK_BF16_AMX) {
        ck_bf16_gemm_amx(m, n, k, a, lda, trans_a, bp, work, accumulate, c, ldc);
        return;
    }
#endif
    ck_bf16_gemm_vdpbf16ps(m, n, k, a, lda, trans_a, bp, work, accumulate, c, ldc);
}

#else /* no AVX512-BF16 build: never called, since ck_bf16_available() is 0 */

static void ck_bf16_pack(Py_ssize_t k, Py_ssize_t n, const float *b, Py_ssize_t ldb, int trans, uint16_t *bp) {}
static void ck_bf16_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda, int trans_a,
                         const uint16_t *bp, uint32_t *work, int accumulate, float *c, Py_ssize_t ldc) {}

#endif
#endif
