"""The batch cut into shards on threads (captionkit.parallel driving the model, the kernels and the optimiser),
checked against one shard and the numpy reference.

Shards change only the order of the gradient sums, so float64 results agree to rounding (1e-12 relative here).
"""
import numpy as np
import pytest

from captionkit import CaptioningRNN, kernels, optim, parallel
from conftest import relative_error

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")


VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(17)}}


def model(dtype=np.float64, backend="cython"):
    return CaptioningRNN(VOCAB, input_dim=9, wordvec_dim=6, hidden_dim=11, dtype=dtype, backend=backend, seed=5)


def batch(N, T=8, seed=0):
    rng = np.random.default_rng(seed)
    captions = rng.integers(0, len(VOCAB), size=(N, T))
    captions[:, 0] = 1
    captions[::3, T // 2:] = 0  # padding in some rows
    return rng.standard_normal((N, 9)), captions


@pytest.mark.parametrize("N, count", [(25, 2), (25, 3), (9, 2), (40, 4)])
def test_sharded_loss_equals_one_shard_and_the_reference(threads, N, count):
    features, captions = batch(N)
    compiled = model()
    threads(1)
    assert len(parallel.shards(N)) == 1
    loss_one, grads_one = compiled.loss(features, captions)
    threads(count)
    assert len(parallel.shards(N)) == min(count, N // 4) > 1
    loss, grads = compiled.loss(features, captions)
    reference = model(backend="numpy")
    loss_ref, grads_ref = reference.loss(features, captions)
    assert abs(loss - loss_one) <= 1e-12 * loss_one and abs(loss - loss_ref) <= 1e-12 * loss_ref
    for name in grads_ref:
        assert relative_error(grads[name], grads_one[name]) < 1e-12, name
        assert relative_error(grads[name], grads_ref[name]) < 1e-12, name


def test_sharded_float32_loss_is_within_float32_rounding(threads):
    features, captions = batch(30, seed=1)
    compiled = model(np.float32)
    threads(1)
    loss_one, grads_one = compiled.loss(features, captions)
    threads(2)
    loss, grads = compiled.loss(features, captions)
    assert abs(loss - loss_one) <= 1e-5 * loss_one
    for name in grads:
        assert grads[name].dtype == np.float32 and relative_error(grads[name], grads_one[name]) < 1e-5, name


def test_sharded_greedy_sampling_equals_one_shard(threads):
    features = np.random.default_rng(3).standard_normal((23, 9)) * 3
    compiled = model()
    threads(1)
    one = compiled.sample(features, max_length=7)
    threads(3)
    assert len(parallel.shards(23)) == 3
    np.testing.assert_array_equal(compiled.sample(features, max_length=7), one)


def test_adam_update_in_slices_equals_the_reference(threads):
    threads(2)
    rng = np.random.default_rng(4)
    w, dw = rng.standard_normal(3 * 65536 + 5), rng.standard_normal(3 * 65536 + 5)
    assert len(parallel.shards(w.size, min_rows=65536)) == 2
    m, v = np.zeros_like(w), np.zeros_like(w)
    expected, config = w.copy(), {"learning_rate": 1e-2}
    for t in range(1, 4):
        kernels.adam_update(w, dw, m, v, t, learning_rate=1e-2, map_shards=parallel.map_shards)
        expected, config = optim.adam(expected, dw, config)
    assert relative_error(w, expected) < 1e-14
    assert relative_error(m, config["m"]) < 1e-14 and relative_error(v, config["v"]) < 1e-14


def test_output_layer_shards_add_up_to_the_whole_batch():
    rng = np.random.default_rng(6)
    h, w, b = rng.standard_normal((10, 4, 5)), rng.standard_normal((5, 7)), rng.standard_normal(7)
    y, mask = rng.integers(0, 7, size=(10, 4)), rng.random((10, 4)) > 0.3
    loss, dh, dw, db = kernels.temporal_softmax_affine_loss(h, w, b, y, mask)
    first = kernels.temporal_softmax_affine_loss(h[:6], w, b, y[:6], mask[:6], batch=10)
    second = kernels.temporal_softmax_affine_loss(h[6:], w, b, y[6:], mask[6:], batch=10)
    assert abs(first[0] + second[0] - loss) < 1e-12 * loss
    assert relative_error(np.concatenate([first[1], second[1]]), dh) < 1e-14
    assert relative_error(first[2] + second[2], dw) < 1e-14 and relative_error(first[3] + second[3], db) < 1e-14
    with pytest.raises(ValueError, match="batch"):
        kernels.temporal_softmax_affine_loss(h, w, b, y, mask, batch=0)
