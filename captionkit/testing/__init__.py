"""A conformance kit for cell authors: does a registered cell honour the Cell interface?

``check_cell("gru")`` runs numerical gradient checks of the sequence forward/backward and of the full model loss in
float64, compares the single decoding step with the sequence forward, compares float32 with float64 (and a compiled
path with the numpy path), and checks that wrong shapes get clear errors. It returns a report, or raises
:class:`ConformanceError` listing the failures. ``captionkit gradcheck --cell NAME`` runs the same checks.

With pytest, ``pytest_plugins = ["captionkit.testing.pytest_plugin"]`` gives a ``check_cell`` fixture that fails a
test with the readable report. This package itself does not import pytest.
"""
from captionkit.testing.conformance import (
    CheckResult,
    ConformanceError,
    ConformanceReport,
    check_cell,
    gradient_error,
    run_checks,
)

__all__ = ["CheckResult", "ConformanceError", "ConformanceReport", "check_cell", "gradient_error", "run_checks"]
