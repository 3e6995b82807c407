"""Recurrent cells and the registry that maps ``cell_type`` names to them.

The vanilla RNN is built in; further cells come from plugins (entry-point group ``captionkit.cells``). See
docs/cells.md for the interface a cell implements.
"""
from captionkit.cells.base import Cell, ParamSpec
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
    "CellRegistry",
    "ParamSpec",
    "UnknownCellError",
    "available_cells",
    "cell_info",
    "get_cell",
    "register_cell",
]
