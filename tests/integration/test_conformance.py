"""The conformance kit (captionkit.testing): every registered cell passes it, and it catches broken cells.

The first test is parametrised over the registry, so an installed plugin is checked without editing this file.
"""
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.backend import compiled_available
from captionkit.cells import CellLoadError, CellRegistry, ParamSpec, available_cells
from captionkit.cells.base import shape_problem
from captionkit.cells import registry as registry_module
from captionkit.cells.rnn import RNNCell
from captionkit import testing as kit
from captionkit.testing import ConformanceError, gradient_error, run_checks
from captionkit.testing.pytest_plugin import check_cell  # noqa: F401  (the pytest plugin's fixture)
from conftest import install_bad_plugins


@pytest.mark.parametrize("cell_type", available_cells())
def test_every_registered_cell_conforms(cell_type, check_cell):  # noqa: F811  (the fixture)
    report = check_cell(cell_type)
    checked = {(r.backend, r.check) for r in report.results}
    assert ("numpy", "sequence gradients float64") in checked and ("numpy", "model loss gradients float64") in checked
    if any(r.backend == "cython" for r in report.results):
        assert ("cython", "compiled matches numpy") in checked


# ------------------------------------------------------------------------------------------- broken cells
class _Scaled(RNNCell):
    """dWh off by 10%: the kind of slip a hand-written backward makes."""

    def backward(self, dh, cache):
        dx, dh0, grads = super().backward(dh, cache)
        return dx, dh0, dict(grads, Wh=grads["Wh"] * 1.1)


class _Transposed(RNNCell):
    def backward(self, dh, cache):
        dx, dh0, grads = super().backward(dh, cache)
        return dx, dh0, dict(grads, Wx=grads["Wx"].T)


class _DeclaresWrongShape(RNNCell):
    def parameters(self, wordvec_dim, hidden_dim):
        return dict(super().parameters(wordvec_dim, hidden_dim), Wx=ParamSpec((hidden_dim, wordvec_dim), wordvec_dim))


class _Upcasts(RNNCell):
    def forward(self, x, h0, params):
        return super().forward(x.astype(np.float64), h0.astype(np.float64), params)


class _StepIgnoresBias(RNNCell):
    def step(self, x, state, params):
        return super().step(x, state, dict(params, b=0 * params["b"]))


class _NoShapeChecks(RNNCell):
    def forward(self, x, h0, params):
        from captionkit import layers

        return layers.rnn_forward(x, h0, params["Wx"], params["Wh"], params["b"])


class _MutatesInput(RNNCell):
    def forward(self, x, h0, params):
        x[0, 0, 0] = 0.0
        return super().forward(x, h0, params)


class _RaisesInBackward(RNNCell):
    def backward(self, dh, cache):
        raise RuntimeError("not written yet")


BROKEN = [
    (_Scaled, "sequence gradients float64", r"dWh \d\.\de-0[12] \(limit 1e-06\)"),
    (_Scaled, "model loss gradients float64", r"dWh \d\.\de-0[12]"),
    (_Transposed, "shapes and dtypes float64", r"backward grads\['Wx'\] has shape \(5, 4\), expected \(4, 5\)"),
    (_DeclaresWrongShape, "shapes and dtypes float64", r"raised ValueError: .*matmul"),
    (_Upcasts, "shapes and dtypes float32", r"forward output h has dtype float64, expected float32"),
    (_StepIgnoresBias, "step matches forward float64", r"step's h differs from forward's h by"),
    (_NoShapeChecks, "rejects wrong shapes", r"does not name 'Wx'"),
    (_MutatesInput, "shapes and dtypes float64", r"modified its inputs"),
    (_RaisesInBackward, "sequence gradients float64", r"raised RuntimeError: not written yet"),
]


class _GreedyDecodesWrongly(RNNCell):
    """A fused greedy decoder whose captions are not what the step loop gives."""

    def greedy_decode(self, h0, params, W_embed, W_vocab, b_vocab, start, end, null, max_length):
        captions = super().greedy_decode(h0, params, W_embed, W_vocab, b_vocab, start, end, null, max_length)
        return None if captions is None else (captions + 1) % W_embed.shape[0]


@pytest.mark.skipif(not compiled_available(), reason="compiled kernels not built")
def test_kit_catches_a_compiled_cell_that_decodes_wrongly(fresh_registry):
    fresh_registry.register_cell("broken", type("Broken", (_GreedyDecodesWrongly,), {"name": "broken"}))
    report = run_checks("broken", backends=("cython",))
    failed = {r.check: r.detail for r in report.failures}
    assert list(failed) == ["shards on threads match the numpy model"], report.format()
    assert "greedy captions differ from the numpy model's" in failed["shards on threads match the numpy model"]


@pytest.fixture
def fresh_registry(monkeypatch):
    """captionkit's registry replaced by a fresh one (installed plugins included) for the length of a test."""
    registry = CellRegistry()
    monkeypatch.setattr(registry_module, "_default_registry", registry)
    return registry


@pytest.mark.parametrize("cls, check, message", BROKEN, ids=[f"{c.__name__}-{k}" for c, k, _ in BROKEN])
def test_kit_catches_a_broken_cell(fresh_registry, cls, check, message):
    broken = type("Broken", (cls,), {"name": "broken"})
    fresh_registry.register_cell("broken", broken)
    report = run_checks("broken", backends=("numpy",))  # the kit's own verdict, before captionkit's kernels
    assert not report.ok
    failed = {r.check: r.detail for r in report.failures}
    assert check in failed, report.format()
    assert re.search(message, failed[check]), failed[check]
    with pytest.raises(ConformanceError, match="cell 'broken' fails"):
        kit.check_cell("broken")
    assert run_checks("rnn").ok  # one broken cell does not disturb the others


class _StepWrongShape(RNNCell):
    def step(self, x, state, params):
        return (state[0][:, :-1],)


class _ForgetsAGradient(RNNCell):
    def backward(self, dh, cache):
        dx, dh0, grads = super().backward(dh, cache)
        return dx, dh0, {k: v for k, v in grads.items() if k != "b"}


@pytest.mark.parametrize("cls, message", [
    (RNNCell, None),
    (_Transposed, r"backward's grads\['Wx'\] has shape \(4, 3\), expected \(3, 4\) \(W=3, H=4"),
    (_DeclaresWrongShape, r"running it on tiny inputs \(W=3, H=4, N=2, T=2\) raised ValueError"),
    (_StepWrongShape, r"step's h has shape \(2, 3\), expected \(2, 4\)"),
    (_ForgetsAGradient, r"gradients for \['Wh', 'Wx'\], expected one for each declared parameter \['Wh', 'Wx', 'b'\]"),
    (_RaisesInBackward, r"raised RuntimeError: not written yet"),
])
def test_shape_problem_is_what_the_registry_refuses_a_plugin_for(cls, message):
    problem = shape_problem(cls)
    assert problem is None if message is None else re.search(message, problem), problem


def test_kit_checks_a_cell_under_its_registered_name(fresh_registry):
    """The model check asks the registry for the name the cell is registered under, not its class's ``name``."""
    fresh_registry.register_cell("alias", type("Renamed", (RNNCell,), {"name": "not_registered_anywhere"}))
    report = run_checks("alias", backends=("numpy",))
    assert report.ok, report.format()


def test_gradient_error_is_relative_and_flags_a_wrong_gradient():
    g = np.array([1.0, -2.0, 3e-9])
    assert gradient_error(g, g) == 0.0
    assert gradient_error(g, g * (1 + 1e-7)) < 1e-7
    assert gradient_error(g, g * 1.01) > 4e-3
    # A near-zero element is judged against 1e-3 of the largest |a| + |n| (here 4), not against its own size: off by
    # all of itself, it counts 3e-9 / 4e-3.
    assert gradient_error(g, g + np.array([0, 0, 3e-9])) == pytest.approx(7.5e-7)


# ------------------------------------------------------------------------------------------- bad plugins (issue 6)


def test_bad_plugins_are_named_by_distribution_and_others_keep_working(plugin_root, monkeypatch):  # noqa: F811
    install_bad_plugins(plugin_root)
    monkeypatch.setattr(registry_module, "_default_registry", CellRegistry())
    expected = {
        "badimport": ("ck-bad-import 0.1", r"RuntimeError: plugin exploded at import"),
        "badtarget": ("ck-bad-target 0.2", r"AttributeError.*NoSuchCell"),
        # The registry runs a plugin once on tiny inputs (W=3, H=4) when it loads it.
        "badshape": ("ck-bad-shape 0.3", r"is broken: running it on tiny inputs \(W=3, H=4.*raised ValueError"),
        "badgrad": ("ck-bad-grad 0.4", r"is broken: backward's grads\['Wx'\] has shape \(4, 3\), expected \(3, 4\)"),
    }
    for name, (dist, message) in expected.items():
        with pytest.raises(CellLoadError, match=rf"cell '{name}' from distribution {dist}"):
            CaptioningRNN({"<NULL>": 0, "a": 1}, cell_type=name)
        report = run_checks(name)
        text = report.format()
        assert not report.ok and f"distribution {dist}" in text, text
        assert [r.check for r in report.failures] == ["loads"] and re.search(message, report.failures[0].detail), text
    # The real cells load and conform in the same process, next to the broken ones.
    for name in available_cells():
        if not name.startswith("bad"):
            assert run_checks(name).ok, name
            CaptioningRNN({"<NULL>": 0, "a": 1}, input_dim=3, wordvec_dim=2, hidden_dim=2, cell_type=name)


# ------------------------------------------------------------------------------------------- kit as a library
@pytest.mark.slow
def test_kit_does_not_import_pytest():
    code = "import sys, captionkit.testing; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_pytest_plugin_fails_a_test_with_the_report(tmp_path):
    (tmp_path / "test_author.py").write_text(textwrap.dedent("""
        from captionkit.cells import register_cell
        from captionkit.cells.rnn import RNNCell


        class Sloppy(RNNCell):
            name = "sloppy"

            def step(self, x, state, params):
                return super().step(x, state, dict(params, b=params["b"] + 1))


        register_cell("sloppy", Sloppy)


        def test_rnn(check_cell):
            check_cell("rnn")


        def test_sloppy(check_cell):
            check_cell("sloppy")
    """))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "captionkit.testing.pytest_plugin",
                             "-p", "no:cacheprovider", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert "1 failed, 1 passed" in result.stdout, result.stdout
    assert re.search(r"FAIL \[numpy\] +step matches forward float64", result.stdout)
    assert "cell 'sloppy' from distribution (run time)" in result.stdout
