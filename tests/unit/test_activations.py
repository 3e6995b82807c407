"""The vectorised activations that cells' compiled pointwise parts get from captionkit/_ext/pointwise.pxd, called
here through captionkit.kernels.sigmoid / tanh (the same C functions) and held to numpy in float64."""
import numpy as np
import pytest

from captionkit import kernels

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")

REFERENCE = {"sigmoid": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh}
ACTIVATIONS = {"sigmoid": kernels.sigmoid, "tanh": kernels.tanh}
# float32: the polynomial exp/tanh (about 2e-7) and a rounding or two; float64: within a few ulps.
TOLERANCE = {np.float32: 1e-6, np.float64: 1e-14}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_activations_equal_numpy(name, dtype):
    rng = np.random.default_rng(7)
    # Gate-sized values, the small |x| where tanh's formula switches (0.625), and the tails; 1031 leaves a remainder
    # after every vector width.
    x = np.concatenate([rng.standard_normal(1031) * 3, np.linspace(-0.7, 0.7, 57), [0.0, -0.0, 1e-8, -1e-30],
                        np.linspace(-30, 30, 61)]).astype(dtype)
    y = ACTIVATIONS[name](x)
    expected = REFERENCE[name](x.astype(np.float64))
    error = np.abs(y - expected) / np.maximum(np.abs(expected), np.finfo(dtype).tiny)
    assert y.dtype == dtype and error.max() < TOLERANCE[dtype], (x[error.argmax()], y[error.argmax()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_saturate_without_nan_and_pass_nan_through(dtype):
    x = np.array([-np.inf, -1e4, -800, 800, 1e4, np.inf, np.nan], dtype=dtype)
    y = kernels.sigmoid(x)
    assert np.isnan(y[-1]) and y[3:6].tolist() == [1, 1, 1]
    assert ((y[:3] >= 0) & (y[:3] < np.exp(-87.0))).all()  # documented: exp(-88) or exp(-709) at most
    y = kernels.tanh(x)
    assert np.isnan(y[-1])
    assert y[:-1].tolist() == [-1, -1, -1, 1, 1, 1]  # exactly, as tanh of these rounds to +-1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_keep_the_shape_and_leave_the_input_alone(dtype):
    x = np.linspace(-2, 2, 48).astype(dtype).reshape(4, 12)[:, ::2]  # not contiguous
    before = x.copy()
    for name, activation in ACTIVATIONS.items():
        y = activation(x)
        assert y.shape == x.shape
        np.testing.assert_allclose(y, REFERENCE[name](x.astype(np.float64)), rtol=TOLERANCE[dtype])
        np.testing.assert_array_equal(x, before)
        assert activation(x[:0]).shape == (0, 6)


def test_activations_refuse_what_is_not_a_float_array():
    with pytest.raises(TypeError, match="x must be float32 or float64, got dtype int64"):
        kernels.sigmoid(np.arange(3))
    with pytest.raises(TypeError, match="x must be a numpy array, got list"):
        kernels.tanh([0.5])
