"""pytest plugin of the conformance kit: enable it with ``pytest_plugins = ["captionkit.testing.pytest_plugin"]``
in a conftest.py, or ``pytest -p captionkit.testing.pytest_plugin``.

It provides the fixture ``check_cell``: ``check_cell("gru")`` runs every conformance check on the cell and fails the
test with the readable report (no traceback into the kit) when any check fails.
"""
import pytest

from captionkit.testing.conformance import run_checks


@pytest.fixture
def check_cell():
    """A function ``check_cell(cell_type, backends=None, seed=0)`` that fails the test unless the cell conforms."""

    def check(cell_type, backends=None, seed=0):
        report = run_checks(cell_type, backends=backends, seed=seed)
        if not report.ok:
            pytest.fail(report.format(), pytrace=False)
        return report

    return check
