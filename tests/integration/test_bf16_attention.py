"""Soft attention at precision "bf16": the compiled engine (captionkit/_ext/_attend.pyx) against the numpy
reference at the same precision (captionkit.attention, every product through captionkit.precision.product), through
forward, backward (with a penalty's gradient of the weights), single steps and greedy decoding, for every cell the
engine runs with attention (rnn, lstm, gru and the test-only gru_numpy, whose pointwise part is numpy).

The bound. Both sides multiply the same bfloat16-rounded inputs exactly in float32 and differ in the order of their
float32 sums (at most 2 gamma_k |A||B| per product, gamma_k ~ k 2**-24: 2e-6 relative at these depths), and where an
upstream value that the sums left a few float32 ulps apart falls on different sides of a bfloat16 rounding boundary:
such an input moves by one bfloat16 step, 2**-8 of itself, on one side only. That happens to a fraction of the
inputs of the order of (float32 difference) / (bfloat16 step), far below 1%, so the norm-wise relative difference of
every result stays below 2**-8 / 10 = 4e-4 (TOLERANCE). bfloat16 against float32 differs by the rounding itself,
2**-9 relative per input, summed over the products: the test also checks that the compiled float32 path is at least
10x further from the reference than the compiled bf16 path is, so a path that ignored the precision would fail.
"""
import numpy as np
import pytest

from captionkit import kernels
from captionkit.attention import AttendedCell, SoftAttention
from captionkit.cells import get_cell
from captionkit.cells.base import CellSizes

pytestmark = [pytest.mark.skipif(not kernels.bf16_available(),
                                 reason="this CPU (or its OS, or the build) lacks AVX512-BF16 (vdpbf16ps)"),
              pytest.mark.usefixtures("bf16_kernel")]  # on every kernel this CPU runs (conftest.py)

TOLERANCE = 2.0**-8 / 10
CELLS = ["rnn", "lstm", "gru", "gru_numpy"]


def _relative(got, want):
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def _attended(cell_type, backend, precision, A):
    cell = AttendedCell(get_cell(cell_type)(backend=backend), SoftAttention(), A, backend=backend)
    cell.use_precision(precision)
    return cell


def _run(cell, params, x, h0, V, dh, dalphas, images):
    h, cache = cell.run_forward(x, h0, params, V)
    dx, dh0, dV, grads = cell.run_backward(dh, cache, dalphas)
    state, context = cell.decoding_inputs(h0, V, params)
    stepped = cell.run_step(x[images, 0], tuple(s[images] for s in state), params, context, images)
    return {"h": h, "alpha": cell.attention_weights(cache), "dx": dx, "dh0": dh0, "dV": dV,
            **{f"d{k}": v for k, v in grads.items()}, **{f"step state {s}": v for s, v in enumerate(stepped)}}


@pytest.mark.parametrize("cell_type", CELLS)
def test_compiled_bf16_attention_follows_the_bf16_reference(cell_type):
    rng = np.random.RandomState(7)
    N, T, W, H, L, D, A = 9, 4, 24, 40, 12, 48, 32
    reference = _attended(cell_type, "numpy", "bf16", A)
    params = reference.init_params_for(CellSizes(W, H, D, D), rng)
    params = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()}
    x, h0, V, dh, dalphas = (rng.standard_normal(shape).astype(np.float32)
                             for shape in ((N, T, W), (N, H), (N, L, D), (N, T, H), (N, T, L)))
    images = np.array([N - 1 - n % N for n in range(N + 2)], dtype=np.int64)
    want = _run(reference, params, x, h0, V, dh, dalphas, images)
    got = _run(_attended(cell_type, "cython", "bf16", A), params, x, h0, V, dh, dalphas, images)
    fp32 = _run(_attended(cell_type, "cython", "fp32", A), params, x, h0, V, dh, dalphas, images)
    assert set(got) == set(want)
    errors = {name: _relative(got[name], want[name]) for name in want}
    assert max(errors.values()) < TOLERANCE, errors
    away = {name: _relative(fp32[name], want[name]) for name in want}
    for name in ("h", "dx", "dWx", "dWh", "datt_Wz", "datt_Ua", "datt_Wa"):
        assert away[name] > 10 * errors[name], (name, away[name], errors[name])


@pytest.mark.parametrize("cell_type", ["lstm", "gru_numpy"])
def test_greedy_decoding_with_bf16_attention_picks_the_reference_words(cell_type):
    rng = np.random.RandomState(8)
    N, W, H, L, D, A, V_words = 12, 16, 32, 9, 24, 20, 30
    engine = _attended(cell_type, "cython", "bf16", A)
    params = engine.init_params_for(CellSizes(W, H, D, D), rng)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    h0 = rng.standard_normal((N, H)).astype(np.float32)
    V = rng.standard_normal((N, L, D)).astype(np.float32)
    W_embed = rng.standard_normal((V_words, W)).astype(np.float32)
    W_vocab = rng.standard_normal((H, V_words)).astype(np.float32)
    b_vocab = np.zeros(V_words, np.float32)
    captions, alphas = engine.greedy_decode(h0, params, W_embed, W_vocab, b_vocab, 1, None, 0, 6, context=V)
    # The reference's step loop, word by word, on the engine's own words: each chosen word must be the reference's
    # best, unless the reference's two best scores are too close for the bound to separate them.
    reference = _attended(cell_type, "numpy", "bf16", A)
    state, context = reference.decoding_inputs(h0, V, params)
    words, images, decided = np.full(N, 1), np.arange(N), 0
    for t in range(captions.shape[1]):
        state = reference.run_step(W_embed[words], state[:-1] + (state[-1],), params, context, images)
        scores = reference._product(state[0], W_vocab) + b_vocab
        ranked = np.sort(scores, axis=1)
        clear = ranked[:, -1] - ranked[:, -2] > 1e-2 * np.abs(ranked[:, -1]).max()
        np.testing.assert_array_equal(captions[clear, t], scores.argmax(axis=1)[clear])
        np.testing.assert_allclose(alphas[:, t], state[-1], atol=1e-3)
        decided += clear.sum()
        words = captions[:, t].astype(np.int64)
    assert decided > 0.8 * captions.size


def test_a_mechanism_with_its_own_equations_refuses_bf16():
    class Changed(SoftAttention):
        name = "changed"

        def forward(self, h, V, keys, params):
            return super().forward(h, V, keys, params)

    with pytest.raises(ValueError, match="attention 'changed' computes its own matrix products"):
        AttendedCell(get_cell("rnn")(backend="numpy"), Changed(), 4, backend="numpy").use_precision("bf16")
