"""The cell registry: maps ``cell_type`` names to Cell classes (a :class:`captionkit.plugins.PluginRegistry`).

The ``rnn`` cell is built in; plugins add cells through the entry-point group ``captionkit.cells``. A plugin's cell
is run once on tiny inputs when first asked for (:func:`~captionkit.cells.base.shape_problem`), and a gated cell's
declared form and compiled pointwise part are checked for every source (:meth:`GatedCell.declaration_problem`),
so a broken cell is refused by name, with its distribution, before a model trains with it.
"""
from captionkit.cells.base import Cell, shape_problem
from captionkit.cells.gated import GatedCell
from captionkit.plugins import (
    DISABLE_AUTOLOAD_ENV,
    PluginConflictError,
    PluginInfo,
    PluginLoadError,
    PluginRegistry,
    UnknownPluginError,
)

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "CellConflictError",
    "CellInfo",
    "CellLoadError",
    "CellRegistry",
    "UnknownCellError",
    "available_cells",
    "cell_info",
    "describe_cell",
    "get_cell",
    "register_cell",
]

ENTRY_POINT_GROUP = "captionkit.cells"
BUILTIN_CELLS = {"rnn": "captionkit.cells.rnn:RNNCell"}
CellInfo = PluginInfo


class UnknownCellError(UnknownPluginError):
    """No cell is registered under the requested name."""


class CellLoadError(PluginLoadError):
    """A registered cell could not be imported, is not a Cell subclass, or is broken."""


class CellConflictError(PluginConflictError):
    """Two installed distributions claim the same cell name."""


class CellRegistry(PluginRegistry):
    """A set of cell sources with lazy loading. captionkit uses one module-level instance; tests make their own."""

    kind = "cell"
    name_label = "cell_type"
    base = Cell
    base_name = "captionkit.cells.Cell"
    unknown_error = UnknownCellError
    load_error = CellLoadError
    conflict_error = CellConflictError
    install_hints = {"lstm": "captionkit-lstm", "gru": "captionkit-gru"}
    install_options = "--no-build-isolation "

    def __init__(self, builtins=None, entry_point_group=ENTRY_POINT_GROUP, autoload_plugins=None):
        super().__init__(BUILTIN_CELLS if builtins is None else builtins, entry_point_group, autoload_plugins)

    def problem(self, target, source):
        problem = target.declaration_problem() if issubclass(target, GatedCell) else None
        if problem is None and source.origin == "entry point":
            problem = shape_problem(target)
        return problem

    register_cell = PluginRegistry.register
    available_cells = PluginRegistry.available
    get_cell = PluginRegistry.load
    cell_info = PluginRegistry.info


_default_registry = CellRegistry()


def register_cell(name, cell, replace=False):
    """Register a cell under ``name`` in captionkit's registry (see :meth:`PluginRegistry.register`)."""
    _default_registry.register(name, cell, replace=replace)


def get_cell(name):
    """The Cell subclass registered as ``name`` (see :meth:`PluginRegistry.load`)."""
    return _default_registry.load(name)


def available_cells():
    """Sorted names of all registered cells, plugins included, without importing plugins."""
    return _default_registry.available()


def describe_cell(name):
    """Where cell ``name`` comes from (see :meth:`PluginRegistry.describe`)."""
    return _default_registry.describe(name)


def cell_info():
    """Name, origin, distribution, version and load status of every cell (see :class:`PluginInfo`)."""
    return _default_registry.info()
