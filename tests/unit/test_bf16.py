"""bfloat16: the rounding of captionkit.precision and of the compiled kernel, and the kernel's products
(captionkit.kernels.bf16_matmul, _ext/_bf16.h) against the emulated product in numpy.

The oracle of the rounding is written here from the definition (the two bfloat16 neighbours of a float32, compared
in float64, ties to the even pattern), independently of the bit trick both implementations use; torch's conversion
is a second oracle when torch is installed.

The bound on a product. Every product of two bfloat16 values is exact in float32 (8 x 8 significand bits), so with
inputs rounded the same way, any float32 evaluation of an entry differs from the exact sum of those products only
by the roundings of its at most k additions: |C - C_exact| <= gamma_k * (|A| @ |B|), gamma_k = k u / (1 - k u),
u = 2**-24 (Higham, Accuracy and Stability of Numerical Algorithms, 3.1), whatever the order of the sums (and
vdpbf16ps, which may round a pair's sum once, rounds no more often). The kernel and the emulated reference each obey
it, so they differ by at most twice as much. vdpbf16ps flushes values below 2**-126 to zero; the random inputs
here are of order 1, whose products never come near.
"""
import threading

import numpy as np
import pytest

from captionkit import kernels, precision

needs_bf16 = pytest.mark.skipif(not kernels.bf16_available(),
                                reason="this CPU (or its OS, or the build) lacks AVX512-BF16 (vdpbf16ps)")
# A product test runs on every kernel this CPU has (AMX tiles and vdpbf16ps; conftest's bf16_kernel skips the rest).
on_each_kernel = pytest.mark.usefixtures("bf16_kernel")
U = 2.0**-24


# ---------------------------------------------------------------------- the oracle of the rounding


def _bf16_value(pattern):
    """The real number a finite bfloat16 pattern stands for, with the exponent range unbounded above (so that the
    pattern after the largest finite one stands for 2**128, the point past which IEEE rounding gives infinity)."""
    sign = -1.0 if pattern & 0x8000 else 1.0
    exponent, mantissa = (pattern >> 7) & 0xFF, pattern & 0x7F
    if exponent == 0:
        return sign * mantissa * 2.0**-133  # subnormal: mantissa * 2**-7 * 2**-126
    return sign * (1 + mantissa / 128) * 2.0 ** (exponent - 127)


def oracle_bits(x):
    """The bfloat16 pattern nearest to the float32 x, from the definition (round to nearest, ties to even)."""
    bits = int(np.float32(x).view(np.uint32))
    if np.isnan(x):
        return None
    if np.isinf(x):
        return bits >> 16
    below = bits >> 16  # truncation: the neighbour nearer to zero
    above = below + 1  # the next pattern away from zero (0x7F80 / 0xFF80: infinity, standing for 2**128)
    value = float(x)
    d_below, d_above = abs(value - _bf16_value(below)), abs(_bf16_value(above) - value)
    if d_below < d_above or (d_below == d_above and below % 2 == 0):
        return below
    return above


def edge_floats():
    """float32 patterns at every edge of the rounding: ties (even and odd kept part), one bit either side of a
    tie, zeros, subnormals (with their ties), the largest finite values (which round up to infinity), infinities and
    NaNs (quiet, signalling, both signs)."""
    patterns = [
        0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x3F818001, 0x3F817FFF,  # ties at 1.0 and 1 + 2**-7
        0x00000000, 0x80000000, 0x3F800000, 0xBF800000,  # zeros, +-1
        0x00000001, 0x00008000, 0x00018000, 0x00008001, 0x0000FFFF, 0x007FFFFF, 0x807FFFFF, 0x00800000,  # subnormal
        0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7EFFFF,  # near the largest finite values
        0x7F800000, 0xFF800000,  # infinities
        0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FBF0000, 0x7F80FFFF,  # NaNs
    ]
    return np.array(patterns, np.uint32).view(np.float32)


def all_kinds_of_floats(count=200_000, seed=0):
    """Random float32 bit patterns of every kind, and the edges."""
    rng = np.random.default_rng(seed)
    random = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([edge_floats(), random])


def check_rounding(x, bits):
    """``bits`` (uint16) must be the oracle's rounding of every float32 in ``x``, NaNs staying NaNs."""
    for value, got in zip(x.tolist(), bits.tolist()):
        value = np.float32(value)
        want = oracle_bits(value)
        if want is None:  # NaN: stays NaN, made quiet, sign kept
            raw = int(value.view(np.uint32))
            assert got & 0x7F80 == 0x7F80 and got & 0x0040, f"NaN {raw:#010x} -> {got:#06x}"
            assert got >> 15 == raw >> 31 and got == (raw >> 16) | 0x40
        else:
            assert got == want, f"{int(value.view(np.uint32)):#010x} ({value!r}): got {got:#06x}, want {want:#06x}"


# ---------------------------------------------------------------------- rounding in numpy


def test_the_oracle_knows_the_textbook_cases():
    assert oracle_bits(np.float32(1.0)) == 0x3F80
    assert oracle_bits(np.uint32(0x3F808000).view(np.float32)) == 0x3F80  # a tie: kept part even, stays
    assert oracle_bits(np.uint32(0x3F818000).view(np.float32)) == 0x3F82  # a tie: kept part odd, rounds up
    assert oracle_bits(np.uint32(0x7F7FFFFF).view(np.float32)) == 0x7F80  # float32's max rounds to infinity


def test_numpy_rounding_is_round_to_nearest_even_on_every_kind_of_float():
    x = all_kinds_of_floats(50_000)
    check_rounding(x, precision.bf16_bits(x))


def test_rounding_matches_torch_except_the_nan_payload():
    torch = pytest.importorskip("torch", reason="torch is not installed: no second oracle for the rounding")
    x = all_kinds_of_floats()
    finite_or_inf = ~np.isnan(x)
    theirs = torch.from_numpy(x[finite_or_inf]).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(precision.bf16_bits(x[finite_or_inf]), theirs)


def test_round_to_bf16_gives_float32_values_and_keeps_shape():
    x = np.array([[1.0 + 2.0**-10, -3.0], [np.inf, np.nan]], np.float32)
    r = precision.round_to_bf16(x)
    assert r.dtype == np.float32 and r.shape == x.shape
    assert r[0, 0] == 1.0 and r[0, 1] == -3.0 and r[1, 0] == np.inf and np.isnan(r[1, 1])
    finite = np.random.default_rng(1).standard_normal(10_000).astype(np.float32)
    assert np.all(np.abs(precision.round_to_bf16(finite) - finite) <= precision.BF16_UNIT_ROUNDOFF * np.abs(finite))


def test_rounding_refuses_other_dtypes():
    with pytest.raises(TypeError, match="x must be float32"):
        precision.bf16_bits(np.ones(3))
    with pytest.raises(TypeError, match="bits must be a numpy uint16"):
        precision.from_bf16_bits(np.ones(3, np.int32))
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) and \(2, 3\)"):
        precision.bf16_matmul_reference(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))


# ---------------------------------------------------------------------- rounding in the kernel


@needs_bf16
def test_the_kernels_rounding_is_the_same_on_every_kind_of_float():
    from captionkit._ext import _bf16

    x = all_kinds_of_floats(50_000, seed=2)
    check_rounding(x, _bf16.round_bits(x))


@on_each_kernel
def test_a_product_with_the_identity_returns_the_rounded_inputs():
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((37, 45)) * 2.0 ** rng.integers(-100, 100, (37, 45))).astype(np.float32)
    a[0, :5] = np.uint32([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x7F7F7FFF]).view(np.float32)
    np.testing.assert_array_equal(kernels.bf16_matmul(a, np.eye(45, dtype=np.float32)), precision.round_to_bf16(a))


@on_each_kernel
def test_infinities_and_nans_go_through_a_product():
    b = np.array([[2.0, 0.0]], np.float32)
    c = kernels.bf16_matmul(np.array([[np.inf], [-np.inf], [np.nan]], np.float32), b)
    assert c[0, 0] == np.inf and c[1, 0] == -np.inf and np.isnan(c[2, 0])
    assert np.isnan(c[:, 1]).all()  # inf * 0 and nan * 0
    largest = np.uint32([[0x7F7FFFFF]]).view(np.float32)  # float32's largest value rounds up to infinity
    assert kernels.bf16_matmul(largest, np.ones((1, 1), np.float32))[0, 0] == np.inf


@on_each_kernel
def test_subnormal_inputs_count_as_zero_as_on_the_hardware():
    # precision rounds 2**-130 to a bfloat16 subnormal; vdpbf16ps and tdpbf16ps treat it as zero, as oneDNN and torch
    # see it.
    tiny = np.float32(2.0**-130)
    assert precision.round_to_bf16(np.array([tiny]))[0] == tiny
    assert kernels.bf16_matmul(np.array([[tiny, 1.0]], np.float32), np.array([[2.0**10], [0.0]], np.float32)) == 0


@on_each_kernel
def test_sums_are_float32_not_bfloat16():
    # 257 needs 9 significant bits: a bfloat16 accumulator would stop at 256.
    assert kernels.bf16_matmul(np.ones((1, 257), np.float32), np.ones((257, 1), np.float32))[0, 0] == 257.0
    # And the inputs are rounded: 1 + 2**-10 is 1 in bfloat16.
    assert kernels.bf16_matmul(np.full((1, 1), 1 + 2.0**-10, np.float32), np.ones((1, 1), np.float32))[0, 0] == 1.0


# ---------------------------------------------------------------------- products against the emulation


def _check_product(a, b, c):
    """c (the kernel's) within the bound of the emulated product and of the exact product of the rounded inputs."""
    ra, rb = precision.round_to_bf16(a).astype(np.float64), precision.round_to_bf16(b).astype(np.float64)
    k = a.shape[1]
    gamma = k * U / (1 - k * U)
    scale = np.abs(ra) @ np.abs(rb)
    exact = ra @ rb
    assert np.all(np.abs(c - exact) <= gamma * scale), f"shape {a.shape} @ {b.shape}: beyond gamma_k of the exact"
    emulated = precision.bf16_matmul_reference(a, b)
    assert np.all(np.abs(c - emulated) <= 2 * gamma * scale), f"shape {a.shape} @ {b.shape}: beyond 2 gamma_k"


SMALL_ROWS = [1, 2, 13, 14, 15, 16, 17, 28, 32, 33, 56, 57, 113]  # both kernels' row blocks and their edges
SMALL_COLUMNS = [1, 16, 31, 32, 33, 65]
SMALL_DEPTHS = [1, 2, 3, 31, 64, 255]


@on_each_kernel
@pytest.mark.parametrize("m", SMALL_ROWS)
def test_products_of_odd_sizes_match_the_emulation(m):
    rng = np.random.default_rng(m)
    for n in SMALL_COLUMNS:
        for k in SMALL_DEPTHS:
            a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
            _check_product(a, b, kernels.bf16_matmul(a, b))


@on_each_kernel
@pytest.mark.parametrize("m, n, k", [(50, 2048, 512), (50, 512, 2048), (200, 1004, 512), (3, 40, 8191),
                                     (57, 33, 4097), (1, 1, 20000)])
def test_the_step_shapes_and_large_depths_match_the_emulation(m, n, k):
    rng = np.random.default_rng(k)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    _check_product(a, b, kernels.bf16_matmul(a, b))


@on_each_kernel
@pytest.mark.parametrize("k", [1, 2, 15, 31, 32, 33, 65, 513])
def test_packing_a_transpose_lays_out_the_plain_packs_bits(k):
    # The transposed pack rounds 16 rows x 16 pairs at a time and transposes them in registers; the plain pack goes
    # element by element. On every kind of float (ties, subnormals, NaNs) and at widths either side of its blocks and
    # of the 32-column panels, the two must store the same bfloat16 patterns, padding included.
    from captionkit._ext import _bf16

    for n in (1, 15, 16, 17, 31, 33, 48, 100):
        values = all_kinds_of_floats(k * n + 40, seed=k * 101 + n)
        b = np.resize(np.random.default_rng(n).permutation(values), (k, n))
        plain = np.asarray(_bf16.pack(b, False).panels)
        transposed = np.asarray(_bf16.pack(np.ascontiguousarray(b.T), True).panels)
        np.testing.assert_array_equal(transposed, plain, err_msg=f"B of shape ({k}, {n})")


@on_each_kernel
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (15, 33, 3), (57, 100, 513), (29, 2048, 64)])
def test_transposed_operands_give_the_same_bits(m, n, k):
    # Packing a transpose and gathering a transposed A lay out the same rounded pairs, so the sums are the same.
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    plain = kernels.bf16_matmul(a, b)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    np.testing.assert_array_equal(kernels.bf16_matmul(at, b, trans_a=True), plain)
    np.testing.assert_array_equal(kernels.bf16_matmul(a, bt, trans_b=True), plain)
    np.testing.assert_array_equal(kernels.bf16_matmul(at, kernels.bf16_pack(bt, trans=True), trans_a=True), plain)


@on_each_kernel
def test_one_packed_matrix_serves_threads_at_once():
    rng = np.random.default_rng(7)
    b = rng.standard_normal((512, 2048), np.float32)
    packed = kernels.bf16_pack(b)
    inputs = [rng.standard_normal((25, 512), np.float32) for _ in range(4)]
    alone = [kernels.bf16_matmul(a, packed) for a in inputs]
    together = [None] * len(inputs)

    def work(i):
        for _ in range(5):
            together[i] = kernels.bf16_matmul(inputs[i], packed)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for mine, theirs in zip(alone, together):
        np.testing.assert_array_equal(mine, theirs)


@needs_bf16
def test_the_kernel_in_use_is_one_this_cpu_runs_and_can_be_switched():
    available = kernels.bf16_kernels()
    assert kernels.bf16_kernel() == available[0]  # the default is the fastest: AMX where the CPU has it
    assert set(available) <= set(kernels.BF16_KERNELS) and "vdpbf16ps" in available
    assert list(available) == [name for name in kernels.BF16_KERNELS if name in available]  # fastest first
    a, b = np.ones((3, 5), np.float32), np.ones((5, 2), np.float32)
    for name in available:
        kernels.use_bf16_kernel(name)
        assert kernels.bf16_kernel() == name
        np.testing.assert_array_equal(kernels.bf16_matmul(a, b), np.full((3, 2), 5.0, np.float32))
    kernels.use_bf16_kernel(available[0])
    with pytest.raises(ValueError, match="unknown bfloat16 kernel 'tiles'.*amx, vdpbf16ps"):
        kernels.use_bf16_kernel("tiles")
    if "amx" not in available:
        with pytest.raises(RuntimeError, match="'amx' does not run on this CPU.*it runs vdpbf16ps"):
            kernels.use_bf16_kernel("amx")
    assert kernels.bf16_kernel() == available[0]


# ---------------------------------------------------------------------- bad input


@needs_bf16
def test_bad_arguments_are_named():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"op\(a\) has shape \(3, 4\) but op\(b\) has 5 rows"):
        kernels.bf16_matmul(a, np.ones((5, 2), np.float32))
    with pytest.raises(TypeError, match="a must be float32"):
        kernels.bf16_matmul(a.astype(np.float64), np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="b must be a numpy array"):
        kernels.bf16_matmul(a, [[1.0]])
    with pytest.raises(ValueError, match="a must be C-contiguous"):
        kernels.bf16_matmul(np.ones((4, 6), np.float32)[:, ::2], np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="b has an empty dimension"):
        kernels.bf16_matmul(a, np.ones((4, 0), np.float32))
    with pytest.raises(ValueError, match="b must have 2 dimensions"):
        kernels.bf16_pack(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="trans_b must be False for a packed b"):
        kernels.bf16_matmul(a, kernels.bf16_pack(np.ones((4, 2), np.float32)), trans_b=True)


@needs_bf16
def test_the_compiled_entry_checks_its_arguments_too():
    from captionkit._ext import _bf16

    packed = _bf16.pack(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="a has 3 columns but the packed matrix has depth 4"):
        _bf16.multiply(np.ones((2, 3), np.float32), packed)
    with pytest.raises(ValueError, match="a has an empty dimension"):
        _bf16.multiply(np.ones((0, 4), np.float32), packed)
    with pytest.raises(ValueError):  # a non-contiguous buffer: the memoryview refuses it
        _bf16.multiply(np.ones((4, 8), np.float32)[:, ::2], packed)
    with pytest.raises(TypeError):
        _bf16.multiply(np.ones((2, 4), np.float32), None)


def test_without_avx512_bf16_the_error_names_the_instruction_set(monkeypatch):
    if not kernels.is_available():
        pytest.skip("the compiled kernels are not built")
    from captionkit.kernels import _bf16 as wrapper

    monkeypatch.setattr(wrapper._bf16, "available", lambda: False)
    assert not kernels.bf16_available()
    with pytest.raises(RuntimeError, match=r"need AVX512-BF16 \(the vdpbf16ps instruction\)"):
        kernels.bf16_matmul(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32))
