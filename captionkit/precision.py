"""bfloat16 in numpy: the rounding and the emulated product that the compiled bf16 kernel is tested against.

bfloat16 is float32 with its low 16 mantissa bits dropped: 1 sign bit, 8 exponent bits, 7 mantissa bits, so the same
range as float32 and 8 significant bits (a unit roundoff of 2**-8). A float32 is rounded to it here as
PyTorch's ``tensor.to(torch.bfloat16)`` does: round to nearest, ties to even, on the float32 bits (which keeps
infinities, rounds the largest finite values up to infinity where they are nearer to it, and rounds subnormals like
any other value); a NaN stays a NaN (made quiet, its sign kept) instead of being rounded, which could carry it into
infinity.

The emulated product is autocast's semantics for a matrix product: both inputs rounded to bfloat16, the products
and their sums in float32. Results are returned as float32 arrays holding bfloat16 values (numpy has no bfloat16
dtype); :func:`bf16_bits` gives the 16-bit patterns.
"""
import numpy as np

__all__ = ["BF16_UNIT_ROUNDOFF", "PRECISIONS", "bf16_bits", "bf16_matmul_reference", "check_precision",
           "from_bf16_bits", "product", "round_to_bf16"]

BF16_UNIT_ROUNDOFF = 2.0**-8  # |round_to_bf16(x) - x| <= this * |x| for every normal x
# How a model's matrix products run: "fp32" in the model's own dtype; "bf16" with both inputs rounded to bfloat16
# and float32 sums (torch.autocast's product), on float32 models only.
PRECISIONS = ("fp32", "bf16")


def check_precision(precision, dtype=None, name="precision"):
    """``precision`` if it is one of PRECISIONS (and, for "bf16" with ``dtype`` given, ``dtype`` is float32), else
    ValueError naming ``name``."""
    if precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and dtype is not None and np.dtype(dtype) != np.float32:
        raise ValueError(f"{name}='bf16' rounds float32 values to bfloat16, so it needs dtype float32, got "
                         f"{np.dtype(dtype).name}")
    return precision


def _float32(name, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must be float32 (bfloat16 rounds float32 bits), got dtype {x.dtype}")
    return x


def bf16_bits(x):
    """The bfloat16 patterns (uint16, same shape) nearest to float32 ``x``: round to nearest even, NaN kept."""
    bits = np.ascontiguousarray(_float32("x", x)).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit carries into the kept bits exactly when the dropped half is above a
    # tie, or is a tie and the kept part is odd.
    lowest_kept = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lowest_kept) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)  # the quiet bit set, sign and payload kept
    return rounded


def from_bf16_bits(bits):
    """float32 values of bfloat16 patterns (uint16): the pattern in the high half, zeros below."""
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint16:
        raise TypeError(f"bits must be a numpy uint16 array of bfloat16 patterns, got {getattr(bits, 'dtype', bits)!r}")
    return (bits.astype(np.uint32) << 16).view(np.float32)


def round_to_bf16(x):
    """float32 ``x`` rounded to bfloat16 (round to nearest even, NaN kept), as float32."""
    return from_bf16_bits(bf16_bits(x))


def bf16_matmul_reference(a, b):
    """The emulated bfloat16 product ``round(a) @ round(b)``, multiplied and summed in float32.

    ``a`` (m, k) and ``b`` (k, n) are float32. Each product of two bfloat16 values is exact in float32 (8 x 8
    significand bits); only the sums round, so this differs from any other float32 summation order of the same
    rounded inputs by at most 2 * gamma_k * (|round(a)| @ |round(b)|), gamma_k = k * 2**-24 / (1 - k * 2**-24).
    """
    a, b = _float32("a", a), _float32("b", b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"a (m, k) and b (k, n) must be matrices of matching depth, got shapes {a.shape} and {b.shape}")
    return np.matmul(round_to_bf16(a), round_to_bf16(b), dtype=np.float32)


def product(a, b, precision):
    """The matrix product ``a @ b`` at ``precision``: in the arrays' own dtype ("fp32"), or with both inputs rounded
    to bfloat16 and float32 sums ("bf16", float32 arrays only), the numpy reference's every product at that
    precision (any shapes np.matmul takes; transposed views are fine)."""
    if precision == "fp32":
        return a @ b
    check_precision(precision, np.result_type(a, b))
    return np.matmul(round_to_bf16(a), round_to_bf16(b), dtype=np.float32)
