"""The kernels' ``precision="bf16"``: the affine layer and the output layer's kernels against the same arithmetic
written in numpy on bfloat16-rounded inputs (captionkit.precision.round_to_bf16), and the refusals.

Bound (tests/unit/test_bf16.py derives it): with the inputs rounded alike, the kernel and the numpy product differ
only in float32 summation order, by at most 2 gamma_k (|A| @ |B|) per entry, gamma_k ~ k 2**-24; as a norm-wise
relative difference that is below 2 k 2**-24 (about 4e-5 at k = 1004). float32 products of the unrounded inputs
differ from them by the rounding itself (about 2**-9 relative per input), 100x more, so every test also checks
that the fp32 kernel is far from the bf16 oracle: a kernel that ignored ``precision`` would fail.
"""
import numpy as np
import pytest

from captionkit import kernels
from captionkit.precision import round_to_bf16


def needs_bf16(test):
    """Skipped without AVX512-BF16, else run on every bfloat16 kernel this CPU runs (conftest's bf16_kernel)."""
    skip = pytest.mark.skipif(not kernels.bf16_available(),
                              reason="this CPU (or its OS, or the build) lacks AVX512-BF16 (vdpbf16ps)")
    return skip(pytest.mark.usefixtures("bf16_kernel")(test))


def _bound(k):
    return 2 * k * 2.0**-24


def _relative(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _close_to_bf16_oracle(compiled_bf16, compiled_fp32, oracle, k):
    assert _relative(compiled_bf16, oracle) < _bound(k)
    assert _relative(compiled_fp32, oracle) > 10 * _bound(k)


def _arrays(rng, *shapes):
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


@needs_bf16
@pytest.mark.parametrize("N, D, M", [(1, 1, 1), (7, 33, 65), (50, 512, 1004)])
def test_affine_forward_and_backward_round_every_product(N, D, M):
    rng = np.random.default_rng(N + D + M)
    x, w, b, dout = _arrays(rng, (N, D), (D, M), (M,), (N, M))
    out, cache = kernels.affine_forward(x, w, b, precision="bf16")
    out32, _ = kernels.affine_forward(x, w, b)
    rx, rw, rd = (round_to_bf16(a).astype(np.float64) for a in (x, w, dout))
    if D > 1:  # a product of depth 1 is exact in both precisions' sums: only the rounding itself differs
        _close_to_bf16_oracle(out - b, out32 - b, rx @ rw, D)
    dx, dw, db = kernels.affine_backward(dout, cache, precision="bf16")
    dx32, dw32, _ = kernels.affine_backward(dout, cache)
    assert _relative(dx, rd @ rw.T) < _bound(M) and _relative(dw, rx.T @ rd) < _bound(N)
    if M > 1:
        assert _relative(dx32, rd @ rw.T) > 10 * _bound(M)
    np.testing.assert_array_equal(db, dout.sum(axis=0))  # the bias gradient has no product


def _output_layer(rng, N=6, T=5, H=48, V=97):
    h, w, b = _arrays(rng, (N, T, H), (H, V), (V,))
    y = rng.integers(0, V, size=(N, T))
    mask = rng.random((N, T)) < 0.8
    return h, w, b, y, mask


def _softmax_loss_oracle(h, w, b, y, mask):
    """The fused loss in float64 from bf16-rounded h and w, and a second pass for the backward products, whose
    left inputs (the scores' gradient) the kernel also rounds."""
    N, T, H = h.shape
    rh, rw = round_to_bf16(h).astype(np.float64).reshape(N * T, H), round_to_bf16(w).astype(np.float64)
    scores = rh @ rw + b
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    flat_y, flat_mask = y.reshape(-1), mask.reshape(-1)
    loss = -np.sum(flat_mask * log_probs[np.arange(N * T), flat_y]) / N
    dscores = np.exp(log_probs)
    dscores[np.arange(N * T), flat_y] -= 1
    dscores *= flat_mask[:, None] / N
    rd = round_to_bf16(dscores.astype(np.float32)).astype(np.float64)
    return loss, (rd @ rw.T).reshape(N, T, H), rh.T @ rd


@needs_bf16
def test_softmax_loss_rounds_its_three_products():
    rng = np.random.default_rng(3)
    h, w, b, y, mask = _output_layer(rng)
    loss, dh, dw, db = kernels.temporal_softmax_affine_loss(h, w, b, y, mask, precision="bf16")
    loss32, dh32, _, _ = kernels.temporal_softmax_affine_loss(h, w, b, y, mask)
    want_loss, want_dh, want_dw = _softmax_loss_oracle(h, w, b, y, mask)
    assert abs(loss - want_loss) < 1e-4 * abs(want_loss) < abs(loss32 - want_loss) * 100
    # The scores' gradient is computed in float32 from scores that differ from the oracle's by the products'
    # sum order, so a few of its bf16 roundings may fall the other way: 2**-8 on those entries, few of them.
    assert _relative(dh, want_dh) < 1e-3 < 10 * _relative(dh32, want_dh)
    assert _relative(dw, want_dw) < 1e-3
    nll = kernels.temporal_softmax_affine_nll(h, w, b, y, mask, precision="bf16")
    assert abs(nll.sum() / h.shape[0] - want_loss) < 1e-4 * abs(want_loss)


@needs_bf16
def test_decoding_kernels_score_with_rounded_products():
    rng = np.random.default_rng(4)
    h, w, b = _arrays(rng, (40, 64), (64, 300), (300,))
    scores = round_to_bf16(h).astype(np.float64) @ round_to_bf16(w) + b
    ranked = np.sort(scores, axis=1)
    clear = (ranked[:, -1] - ranked[:, -2]) > 1e-3 * np.abs(ranked[:, -1])  # rows whose best word is not a near tie
    best = kernels.affine_argmax(h, w, b, precision="bf16")
    np.testing.assert_array_equal(best[clear], scores.argmax(axis=1)[clear])
    logp, ids = kernels.affine_log_softmax_topk(h, w, b, 3, precision="bf16")
    np.testing.assert_array_equal(ids[clear, 0], best[clear])
    shifted = scores - scores.max(axis=1, keepdims=True)
    want = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(logp, np.take_along_axis(want, ids, axis=1), atol=1e-4)
    ids_s, logp_s = kernels.affine_sample(h, w, b, np.full(40, 0.5), precision="bf16")
    np.testing.assert_allclose(logp_s, want[np.arange(40), ids_s], atol=1e-4)


def test_precision_is_checked_before_anything_runs():
    rng = np.random.default_rng(5)
    x, w, b = _arrays(rng, (3, 4), (4, 5), (5,))
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        kernels.affine_forward(x, w, b, precision="fp16")
    with pytest.raises(ValueError, match="needs dtype float32, got float64"):
        kernels.affine_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), precision="bf16")


def test_a_cpu_without_bf16_is_named(monkeypatch):
    from captionkit._ext import _bf16

    monkeypatch.setattr(_bf16, "available", lambda: False)
    rng = np.random.default_rng(6)
    h, w, b = _arrays(rng, (3, 4), (4, 5), (5,))
    with pytest.raises(RuntimeError, match="AVX512-BF16"):
        kernels.affine_argmax(h, w, b, precision="bf16")
