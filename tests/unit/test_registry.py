"""The cell registry, with fake plugin distributions made as dist-info folders on sys.path (no pip needed)."""
import sys

import pytest

from captionkit.cells import (
    Cell,
    CellConflictError,
    CellLoadError,
    CellRegistry,
    UnknownCellError,
    available_cells,
    get_cell,
)
from captionkit.cells.rnn import RNNCell
from conftest import make_distribution

GOOD_MODULE = """
from captionkit.cells.rnn import RNNCell

class FakeCell(RNNCell):
    name = "fake"

NOT_A_CELL = 42
"""


def test_builtin_rnn_is_registered():
    assert "rnn" in available_cells()
    assert get_cell("rnn") is RNNCell


def test_plugin_is_discovered_by_name_and_loaded_on_first_use(plugin_root):
    make_distribution(plugin_root, "fake-good", "1.2", {"fake": "ck_fake_good:FakeCell"},
                      {"ck_fake_good": GOOD_MODULE})
    registry = CellRegistry()
    assert "fake" in registry.available_cells()
    assert "ck_fake_good" not in sys.modules  # discovery reads names only
    cls = registry.get_cell("fake")
    assert issubclass(cls, Cell) and cls.name == "fake"
    info = {i.name: i for i in registry.cell_info()}["fake"]
    assert (info.origin, info.distribution, info.version, info.loads) == ("entry point", "fake-good", "1.2", True)


def test_broken_plugin_reports_distribution_and_spares_others(plugin_root):
    make_distribution(plugin_root, "fake-broken", "0.3", {"broken": "ck_fake_broken:Cell"},
                      {"ck_fake_broken": "raise RuntimeError('boom at import')\n"})
    make_distribution(plugin_root, "fake-missing", "0.4", {"needsdep": "ck_fake_needsdep:Cell"},
                      {"ck_fake_needsdep": "import ck_fake_not_installed_anywhere\n"})
    make_distribution(plugin_root, "fake-noattr", "0.5", {"noattr": "ck_fake_noattr:Missing"},
                      {"ck_fake_noattr": GOOD_MODULE})
    make_distribution(plugin_root, "fake-notcell", "0.6", {"notcell": "ck_fake_notcell:NOT_A_CELL"},
                      {"ck_fake_notcell": GOOD_MODULE})
    registry = CellRegistry()
    assert {"broken", "needsdep", "noattr", "notcell", "rnn"} <= set(registry.available_cells())
    with pytest.raises(CellLoadError, match=r"'broken' from distribution fake-broken 0\.3.*RuntimeError: boom"):
        registry.get_cell("broken")
    with pytest.raises(CellLoadError, match=r"fake-missing 0\.4.*module 'ck_fake_not_installed_anywhere'"):
        registry.get_cell("needsdep")
    with pytest.raises(CellLoadError, match=r"fake-noattr 0\.5.*AttributeError"):
        registry.get_cell("noattr")
    with pytest.raises(CellLoadError, match=r"fake-notcell 0\.6.*not a captionkit.cells.Cell subclass"):
        registry.get_cell("notcell")
    assert registry.get_cell("rnn") is RNNCell
    status = {i.name: i for i in registry.cell_info()}
    assert status["rnn"].loads and not status["broken"].loads and "boom" in status["broken"].error


def test_two_distributions_claiming_one_name_is_an_error_naming_both(plugin_root):
    make_distribution(plugin_root, "fake-one", "1.0", {"twin": "ck_fake_one:FakeCell"}, {"ck_fake_one": GOOD_MODULE})
    make_distribution(plugin_root, "fake-two", "2.0", {"twin": "ck_fake_two:FakeCell"}, {"ck_fake_two": GOOD_MODULE})
    registry = CellRegistry()
    with pytest.raises(CellConflictError, match=r"fake-one 1\.0.*fake-two 2\.0|fake-two 2\.0.*fake-one 1\.0"):
        registry.get_cell("twin")
    assert not {i.name: i for i in registry.cell_info()}["twin"].loads


def test_builtin_wins_a_name_clash(plugin_root):
    make_distribution(plugin_root, "fake-clash", "1.0", {"rnn": "ck_fake_clash:FakeCell"},
                      {"ck_fake_clash": GOOD_MODULE})
    registry = CellRegistry()
    assert registry.get_cell("rnn") is RNNCell
    assert "ck_fake_clash" not in sys.modules


def test_autoload_switch_ignores_plugins(plugin_root, monkeypatch):
    make_distribution(plugin_root, "fake-good", "1.2", {"fake": "ck_fake_good:FakeCell"},
                      {"ck_fake_good": GOOD_MODULE})
    monkeypatch.setenv("CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = CellRegistry()
    assert registry.available_cells() == ["rnn"]
    with pytest.raises(UnknownCellError, match="unknown cell_type 'fake'"):
        registry.get_cell("fake")


def test_unknown_known_plugin_says_how_to_install():
    registry = CellRegistry(entry_point_group="captionkit.cells.none-installed")
    with pytest.raises(ValueError, match=r"pip install --no-build-isolation plugins/captionkit-lstm"):
        registry.get_cell("lstm")


def test_register_cell_at_run_time():
    registry = CellRegistry()

    class MyCell(RNNCell):
        name = "mine"

    registry.register_cell("mine", MyCell)
    assert registry.get_cell("mine") is MyCell
    with pytest.raises(ValueError, match="already registered"):
        registry.register_cell("mine", MyCell)
    registry.register_cell("mine", "captionkit.cells.rnn:RNNCell", replace=True)
    assert registry.get_cell("mine") is RNNCell
    with pytest.raises(ValueError, match="built-in"):
        registry.register_cell("rnn", MyCell)
    with pytest.raises(TypeError, match="Cell subclass"):
        registry.register_cell("other", object)
