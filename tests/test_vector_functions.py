"""captionkit.kernels.vector_functions: the in-place activations given to plugins as C function addresses, called
here through ctypes with the documented ABI ``void f(T *y, Py_ssize_t n)`` and held to numpy in float64."""
import ctypes

import numpy as np
import pytest

from captionkit import kernels

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")

SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_ssize_t)
REFERENCE = {"sigmoid": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh}
# float32: the polynomial exp/tanh (about 2e-7) and a rounding or two; float64: within a few ulps.
TOLERANCE = {np.float32: 1e-6, np.float64: 1e-14}


def call(name, dtype, y, n=None):
    """Apply vector_functions()[name_s/_d] in place to the first n elements (all by default) of y."""
    suffix = "s" if dtype == np.float32 else "d"
    function = SIGNATURE(kernels.vector_functions()[f"{name}_{suffix}"])
    function(y.ctypes.data, y.size if n is None else n)


def test_vector_functions_are_public_and_complete():
    assert "vector_functions" in kernels.__all__
    functions = kernels.vector_functions()
    assert sorted(functions) == ["sigmoid_d", "sigmoid_s", "tanh_d", "tanh_s"]
    assert all(isinstance(address, int) and address for address in functions.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_activations_equal_numpy(name, dtype):
    rng = np.random.default_rng(7)
    # Gate-sized values, the small |x| where tanh's formula switches (0.625), and the tails; 1031 leaves a remainder
    # after every vector width.
    x = np.concatenate([rng.standard_normal(1031) * 3, np.linspace(-0.7, 0.7, 57), [0.0, -0.0, 1e-8, -1e-30],
                        np.linspace(-30, 30, 61)]).astype(dtype)
    y = x.copy()
    call(name, dtype, y)
    expected = REFERENCE[name](x.astype(np.float64))
    error = np.abs(y - expected) / np.maximum(np.abs(expected), np.finfo(dtype).tiny)
    assert error.max() < TOLERANCE[dtype], (x[error.argmax()], y[error.argmax()], expected[error.argmax()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_saturate_without_nan_and_pass_nan_through(dtype):
    x = np.array([-np.inf, -1e4, -800, 800, 1e4, np.inf, np.nan], dtype=dtype)
    y = x.copy()
    call("sigmoid", dtype, y)
    assert np.isnan(y[-1]) and y[3:6].tolist() == [1, 1, 1]
    assert ((y[:3] >= 0) & (y[:3] < np.exp(-87.0))).all()  # documented: exp(-88) or exp(-709) at most
    y = x.copy()
    call("tanh", dtype, y)
    assert np.isnan(y[-1])
    assert y[:-1].tolist() == [-1, -1, -1, 1, 1, 1]  # exactly, as tanh of these rounds to +-1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_touch_only_the_first_n_elements(dtype):
    x = np.linspace(-2, 2, 40).astype(dtype)
    for name in ("sigmoid", "tanh"):
        y = x.copy()
        call(name, dtype, y, n=17)
        np.testing.assert_allclose(y[:17], REFERENCE[name](x[:17].astype(np.float64)), rtol=TOLERANCE[dtype])
        np.testing.assert_array_equal(y[17:], x[17:])
        call(name, dtype, y, n=0)
        np.testing.assert_array_equal(y[17:], x[17:])
