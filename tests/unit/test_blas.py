"""The products of the compiled time loops (captionkit/_ext/_blas, _panel.h): on packed panels where the CPU allows
it and on BLAS otherwise, equal to the numpy reference (captionkit.layers) on every product path; which path is
taken follows from the CPU and the bound OpenBLAS."""
import os
import subprocess
import sys

import numpy as np
import pytest

from captionkit import kernels, layers
from conftest import relative_error

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize(
    "N, T, D, H",
    # Row tiles of 1-14 rows (15 = 8 + 7, 25 = 13 + 12), groups of up to 4 tiles (57 rows: 2 groups of 28 + 29),
    # whole and cut-short panels (16 and 32 columns).
    [(1, 2, 3, 1), (2, 3, 4, 16), (14, 4, 5, 31), (15, 3, 3, 17), (25, 3, 7, 33), (30, 2, 6, 70), (12, 5, 8, 64),
     (57, 2, 4, 40)],
)
def test_time_loops_equal_reference_on_both_product_paths(step_products, dtype, tolerance, N, T, D, H):
    rng = np.random.default_rng(N * 1000 + H)
    scale = 1 / np.sqrt(H)  # a stable recurrence, so the comparison measures the products and not chaos
    x = rng.standard_normal((N, T, D))
    h0, dh = rng.standard_normal((N, H)), rng.standard_normal((N, T, H))
    Wx, Wh, b = rng.standard_normal((D, H)) * scale, rng.standard_normal((H, H)) * scale, rng.standard_normal(H)
    h, cache = kernels.rnn_forward(*(a.astype(dtype) for a in (x, h0, Wx, Wh, b)))
    h_ref, cache_ref = layers.rnn_forward(x, h0, Wx, Wh, b)
    assert h.dtype == dtype and relative_error(h, h_ref) < tolerance
    grads = kernels.rnn_backward(dh.astype(dtype), cache)
    for name, got, want in zip(("dx", "dh0", "dWx", "dWh", "db"), grads, layers.rnn_backward(dh, cache_ref)):
        assert relative_error(got, want) < tolerance, name


def test_panel_path_is_taken_where_the_cpu_allows_it():
    from captionkit._ext import _blas

    previous = _blas.use_panel(True, True)
    try:
        with open("/proc/cpuinfo") as info:
            has_avx512 = " avx512f " in info.read().replace("\n", " ")
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    finally:
        now = _blas.use_panel(*previous)
    assert now == (has_avx512 and sys.platform == "linux",) * 2


@pytest.mark.slow
def test_other_products_go_to_the_panels_exactly_when_openblas_runs_narrower_kernels():
    """The rule captionkit binds its BLAS with: OpenBLAS's core name says whether its kernels have AVX-512."""
    from captionkit._ext import _blas

    description = kernels.blas()
    if not description.startswith("OpenBLAS"):
        pytest.skip("the kernels run on scipy's BLAS here, whose products stay on it")
    step, large = _blas.panel_use()
    avx512_blas = any(f"{core} kernels" in description for core in ("SkylakeX", "Cooperlake", "SapphireRapids"))
    assert large == (step and not avx512_blas)
    code = "from captionkit import kernels; from captionkit._ext import _blas; print(kernels.blas(), _blas.panel_use())"
    run = lambda core: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                      env={**os.environ, "OPENBLAS_CORETYPE": core}).stdout
    assert "Haswell kernels" in run("Haswell") and run("Haswell").endswith(f"({step}, {step})\n")
