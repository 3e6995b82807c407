"""captionkit.backend: which backend a name or the environment picks, and what each backend's runtime runs.

Oracles: the modules themselves (captionkit.layers and captionkit.kernels), captionkit.optim's update rules, and
plain Python results for the batch cutting.
"""
import pytest

from captionkit import backend, layers, optim


def test_numpy_is_always_numpy_and_auto_follows_the_build(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    assert backend.resolve_backend("numpy") == backend.resolve_backend("NumPy") == "numpy"
    built = backend.compiled_available()
    assert backend.resolve_backend("auto") == backend.resolve_backend(None) == ("cython" if built else "numpy")


def test_the_environment_sets_the_default_and_is_named_when_wrong(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    assert backend.resolve_backend() == "numpy"
    assert backend.resolve_backend("auto") in ("numpy", "cython")  # an argument wins over the environment
    monkeypatch.setenv(backend.ENV_VAR, "")
    assert backend.resolve_backend() == backend.resolve_backend("auto")
    monkeypatch.setenv(backend.ENV_VAR, "fortran")
    with pytest.raises(ValueError, match=r"^environment variable CAPTIONKIT_BACKEND='fortran' is not a backend; "
                                         r"choose one of auto, numpy, cython$"):
        backend.resolve_backend()
    with pytest.raises(ValueError, match=r"^argument backend='gpu' is not a backend"):
        backend.resolve_backend("gpu")


def test_asking_for_cython_without_the_build_is_an_error(monkeypatch):
    monkeypatch.setattr(backend, "compiled_available", lambda: False)
    assert backend.resolve_backend("auto") == "numpy"
    with pytest.raises(RuntimeError, match="argument backend asks for the compiled 'cython' backend, but "
                                           "captionkit._ext is not built"):
        backend.resolve_backend("cython")


def test_the_numpy_runtime_runs_the_reference_one_slice_in_order():
    runtime = backend.runtime("numpy")
    assert runtime is backend.runtime("numpy") and runtime.ops is layers and backend.ops("numpy") is layers
    assert runtime.map_rows(10, lambda rows: (rows.start, rows.stop)) == [(0, 10)]
    order = []
    assert runtime.run([lambda: order.append(1) or "a", lambda: order.append(2) or "b"]) == ["a", "b"]
    assert order == [1, 2]
    assert runtime.update_rule("adam") is optim.UPDATE_RULES["adam"] and runtime.update_rule("sgd") is optim.sgd
    runtime.prepare()  # nothing to prepare for numpy


@pytest.mark.skipif(not backend.compiled_available(), reason="compiled kernels not built")
def test_the_compiled_runtime_covers_the_batch_and_fuses_adam(threads):
    from captionkit import kernels

    runtime = backend.runtime("cython")
    assert runtime.ops is kernels
    threads(3)
    slices = runtime.map_rows(14, lambda rows: (rows.start, rows.stop))
    assert slices[0][0] == 0 and slices[-1][1] == 14 and all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    assert len(slices) > 1
    assert runtime.run([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    assert runtime.update_rule("adam") is optim.fused_adam and runtime.update_rule("sgd") is optim.sgd


def test_a_runtime_of_an_unresolved_name_is_refused():
    with pytest.raises(ValueError, match=r"backend must be 'numpy' or 'cython' \(see resolve_backend\), got 'auto'"):
        backend.Runtime("auto")
