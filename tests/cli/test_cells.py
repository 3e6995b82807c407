"""`captionkit cells` and `captionkit gradcheck`, with the real plugins and with broken ones beside them."""
import re

import pytest
from click.testing import CliRunner

from captionkit.cells import CellRegistry
from captionkit.cells import registry as registry_module
from captionkit.cli import main
from conftest import install_bad_plugins


def run(*args):
    return CliRunner().invoke(main, list(args))


def table(output):
    """Rows of the `cells` table as {name: [distribution, version, origin, loads]}."""
    lines = output.split("\n\n")[0].splitlines()
    assert lines[0].split() == ["cell", "distribution", "version", "origin", "loads"]
    rows = {}
    for line in lines[1:]:
        name, dist, version, *origin, loads = line.split()
        rows[name] = [dist, version, " ".join(origin), loads]
    return rows


def test_cells_lists_builtin_and_plugins():
    result = run("cells")
    assert result.exit_code == 0, result.output
    rows = table(result.output)
    assert rows["rnn"] == ["captionkit", rows["rnn"][1], "built in", "yes"]
    assert rows["lstm"] == ["captionkit-lstm", "0.1.0", "entry point", "yes"]
    assert rows["gru"] == ["captionkit-gru", "0.1.0", "entry point", "yes"]


def test_cells_reports_broken_plugins_and_lists_the_rest(plugin_root, monkeypatch):  # noqa: F811
    install_bad_plugins(plugin_root)
    monkeypatch.setattr(registry_module, "_default_registry", CellRegistry())
    result = run("cells")
    assert result.exit_code == 0, result.output
    rows = table(result.output)
    assert rows["badimport"] == ["ck-bad-import", "0.1", "entry point", "NO"]
    assert rows["badtarget"][3] == rows["badshape"][3] == rows["badgrad"][3] == "NO"
    assert rows["rnn"][3] == rows["lstm"][3] == rows["gru"][3] == "yes"
    assert "badimport: cell 'badimport' from distribution ck-bad-import 0.1" in result.output
    assert "RuntimeError: plugin exploded at import" in result.output
    assert "badgrad: cell 'badgrad' from distribution ck-bad-grad 0.4" in result.output
    assert "is broken: backward's grads['Wx'] has shape (4, 3), expected (3, 4)" in result.output


def test_cells_with_autoload_disabled_shows_builtins_only(monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setattr(registry_module, "_default_registry", CellRegistry())
    result = run("cells")
    assert result.exit_code == 0
    assert list(table(result.output)) == ["rnn"]
    assert "CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD is set" in result.output


def test_gradcheck_passes_a_good_cell_and_prints_each_check():
    result = run("gradcheck", "--cell", "lstm")
    assert result.exit_code == 0, result.output
    assert "cell 'lstm' from distribution captionkit-lstm 0.1.0" in result.output
    for backend in ("numpy", "cython", "cython, numpy pointwise"):
        for check in ("sequence gradients float64", "model loss gradients float64"):
            assert re.search(rf"ok   \[{backend}\] +{check}", result.output), (backend, check)
    assert re.search(r"ok   \[cython\] +compiled matches numpy", result.output)
    assert result.output.rstrip().endswith("cell 'lstm' passes")


def test_gradcheck_one_backend():
    result = run("gradcheck", "--cell", "lstm", "--backend", "cython")
    assert result.exit_code == 0, result.output
    assert "[cython]" in result.output and "[numpy]" not in result.output


@pytest.mark.parametrize("args, code, message", [
    (["--cell", "nope"], 1, "unknown cell_type 'nope'"),
    (["--cell", "mgu", "--backend", "cython"], 2, "cell 'mgu' has no backend 'cython'; it has numpy"),
])
def test_gradcheck_errors(args, code, message):
    result = run("gradcheck", *args)
    assert result.exit_code == code
    assert message in result.output


def test_gradcheck_fails_broken_plugins_by_name_and_checks_the_good_ones(plugin_root, monkeypatch):  # noqa: F811
    install_bad_plugins(plugin_root)
    monkeypatch.setattr(registry_module, "_default_registry", CellRegistry())
    result = run("gradcheck", "--cell", "badgrad", "--cell", "badimport", "--cell", "gru")
    assert result.exit_code == 1
    assert "cell 'badgrad' from distribution ck-bad-grad 0.4" in result.output
    assert "is broken: backward's grads['Wx'] has shape (4, 3)" in result.output
    assert re.search(r"FAIL \[-\] +loads", result.output) and "plugin exploded at import" in result.output
    assert "cell 'gru' passes" in result.output
    assert "2 of 3 cells fail conformance checks: badgrad, badimport" in result.output
