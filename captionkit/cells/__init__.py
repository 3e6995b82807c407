"""Recurrent cells and the registry that maps ``cell_type`` names to them.

The vanilla RNN is built in; further cells come from plugins (entry-point group ``captionkit.cells``). A cell of
the usual gated form subclasses :class:`GatedCell` and writes only its elementwise part; any other cell implements
:class:`Cell`. See docs/cells.md.
"""
from captionkit.cells.base import Cell, CellSizes, ParamSpec
from captionkit.cells.gated import GatedCell
from captionkit.cells.registry import (
    ENTRY_POINT_GROUP,
    CellConflictError,
    CellInfo,
    CellLoadError,
    CellRegistry,
    UnknownCellError,
    available_cells,
    cell_info,
    get_cell,
    register_cell,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Cell",
    "CellConflictError",
    "CellInfo",
    "CellLoadError",
    "CellSizes",
    "CellRegistry",
    "GatedCell",
    "ParamSpec",
    "UnknownCellError",
    "available_cells",
    "cell_info",
    "get_cell",
    "register_cell",
]
