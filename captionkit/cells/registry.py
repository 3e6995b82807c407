"""The cell registry: maps ``cell_type`` names to Cell classes.

Three sources, in order of precedence:

1. built-in cells, named here by dotted path and imported on first use;
2. cells registered at run time with :func:`register_cell`;
3. plugins: entry points in the group ``captionkit.cells`` of installed distributions. Discovery reads only their
   names (no plugin code runs); a plugin is imported when its cell is first asked for and then run once on tiny
   inputs (:func:`~captionkit.cells.base.shape_problem`). A plugin that fails to import, whose forward, backward
   or step do not fit its declared parameters, or whose compiled pointwise part is not what this captionkit calls
   (:meth:`GatedCell.declaration_problem`, checked for every source), is reported with its distribution's name and
   version, only to whoever asks for that cell.

Setting ``CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD=1`` ignores entry points: installing a plugin means trusting its code,
and this switch runs captionkit with its built-in cells only.
"""
import importlib
import importlib.metadata
import os
from dataclasses import dataclass

from captionkit.cells.base import Cell, shape_problem
from captionkit.cells.gated import GatedCell

__all__ = [
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
DISABLE_AUTOLOAD_ENV = "CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD"

BUILTIN_CELLS = {"rnn": "captionkit.cells.rnn:RNNCell"}

# Cells that captionkit's own plugins provide, so that asking for one that is not installed says how to get it.
KNOWN_PLUGINS = {
    "lstm": "captionkit-lstm",
    "gru": "captionkit-gru",
}


class UnknownCellError(ValueError):
    """No cell is registered under the requested name."""


class CellLoadError(ImportError):
    """A registered cell could not be imported or is not a Cell subclass."""


class CellConflictError(ValueError):
    """Two installed distributions claim the same cell name."""


@dataclass(frozen=True)
class CellInfo:
    """What :func:`cell_info` reports about one cell name."""

    name: str
    origin: str  # "built in", "registered" or "entry point"
    target: str  # dotted path "module:attr", or the class's qualified name
    distribution: str  # distribution name ("captionkit" for built-ins)
    version: str
    loads: bool
    error: str | None = None


@dataclass(frozen=True)
class _Source:
    origin: str
    target: object  # "module:attr" string or a Cell subclass
    distribution: str
    version: str

    def describe(self):
        return f"distribution {self.distribution} {self.version} ({self.origin} {self._target_text()})"

    def _target_text(self):
        if isinstance(self.target, str):
            return self.target
        return f"{self.target.__module__}:{self.target.__qualname__}"


def _captionkit_version():
    from captionkit import __version__

    return __version__


def _import_target(path):
    """Import ``"package.module:Attr.sub"`` and return the object; errors propagate to the caller to wrap."""
    module_name, _, attr_path = path.partition(":")
    obj = importlib.import_module(module_name)
    for attr in filter(None, attr_path.split(".")):
        obj = getattr(obj, attr)
    return obj


def _describe_import_error(exc):
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"it needs the module {exc.name!r}, which is not installed ({exc})"
    return f"{type(exc).__name__}: {exc}"


class CellRegistry:
    """A set of cell sources with lazy loading. captionkit uses one module-level instance; tests make their own."""

    def __init__(self, builtins=None, entry_point_group=ENTRY_POINT_GROUP, autoload_plugins=None):
        self._builtins = dict(BUILTIN_CELLS if builtins is None else builtins)
        self._registered = {}
        self._group = entry_point_group
        if autoload_plugins is None:
            autoload_plugins = os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() in ("", "0")
        self._autoload = autoload_plugins
        self._plugins = None  # name -> list of _Source, filled on first need
        self._loaded = {}  # name -> Cell subclass

    # ------------------------------------------------------------------ discovery
    def _plugin_sources(self):
        if self._plugins is None:
            self._plugins = {}
            if self._autoload:
                seen = set()
                for ep in importlib.metadata.entry_points(group=self._group):
                    dist = getattr(ep, "dist", None)
                    dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
                    version = dist.version if dist is not None else "?"
                    # One distribution can be visible twice (an editable install beside a build dir): keep one.
                    key = (ep.name, dist_name, ep.value)
                    if key in seen:
                        continue
                    seen.add(key)
                    self._plugins.setdefault(ep.name, []).append(_Source("entry point", ep.value, dist_name, version))
        return self._plugins

    def _source(self, name):
        """The source that provides ``name``; raises UnknownCellError or CellConflictError."""
        if name in self._builtins:
            return _Source("built in", self._builtins[name], "captionkit", _captionkit_version())
        if name in self._registered:
            return self._registered[name]
        sources = self._plugin_sources().get(name, [])
        if len(sources) > 1:
            claimants = "; ".join(s.describe() for s in sources)
            raise CellConflictError(
                f"cell {name!r} is claimed by more than one installed distribution: {claimants}. "
                "Uninstall all but one of them."
            )
        if sources:
            return sources[0]
        raise UnknownCellError(self._unknown_message(name))

    def _unknown_message(self, name):
        message = f"unknown cell_type {name!r}; registered cells: {', '.join(self.available_cells()) or 'none'}"
        if name in KNOWN_PLUGINS:
            dist = KNOWN_PLUGINS[name]
            message += (
                f". The {name!r} cell is provided by the plugin distribution {dist}: install it with "
                f"`pip install --no-build-isolation plugins/{dist}` from a captionkit checkout"
            )
            if not self._autoload:
                message += f" (plugins are disabled now because {DISABLE_AUTOLOAD_ENV} is set)"
        return message

    # ------------------------------------------------------------------ public API
    def register_cell(self, name, cell, replace=False):
        """Register ``cell`` (a Cell subclass, or a ``"module:Class"`` path imported lazily) under ``name``.

        Built-in names cannot be replaced; an existing registration is replaced only with ``replace=True``.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"cell name must be an identifier-like string, got {name!r}")
        if not isinstance(cell, str) and not (isinstance(cell, type) and issubclass(cell, Cell)):
            raise TypeError(f"cell must be a captionkit.cells.Cell subclass or a 'module:Class' path, got {cell!r}")
        if name in self._builtins:
            raise ValueError(f"{name!r} is a built-in cell and cannot be replaced")
        if name in self._registered and not replace:
            raise ValueError(f"a cell named {name!r} is already registered; pass replace=True to replace it")
        self._registered[name] = _Source("registered", cell, "(run time)", "-")
        self._loaded.pop(name, None)

    def available_cells(self):
        """Sorted names of every known cell, without importing any plugin."""
        return sorted(set(self._builtins) | set(self._registered) | set(self._plugin_sources()))

    def get_cell(self, name):
        """The Cell subclass registered as ``name``, importing it on first use.

        Raises UnknownCellError (a ValueError) naming the registered cells, CellConflictError when two distributions
        claim the name, or CellLoadError naming the distribution when the plugin fails to import.
        """
        if name in self._loaded:
            return self._loaded[name]
        source = self._source(name)
        target = source.target
        if isinstance(target, str):
            try:
                target = _import_target(target)
            except Exception as exc:  # a plugin may raise anything on import; report it with its origin
                raise CellLoadError(
                    f"cell {name!r} from {source.describe()} failed to load: {_describe_import_error(exc)}"
                ) from exc
        if not (isinstance(target, type) and issubclass(target, Cell)):
            raise CellLoadError(
                f"cell {name!r} from {source.describe()} is {target!r}, not a captionkit.cells.Cell subclass"
            )
        # A gated cell's declared form and compiled part are checked for every source; a plugin's code is also run
        # once, so a broken cell is refused by name before a model trains with it.
        problem = target.declaration_problem() if issubclass(target, GatedCell) else None
        if problem is None and source.origin == "entry point":
            problem = shape_problem(target)
        if problem:
            raise CellLoadError(f"cell {name!r} from {source.describe()} is broken: {problem}")
        self._loaded[name] = target
        return target

    def describe(self, name):
        """Where cell ``name`` comes from, for messages: its distribution, version, origin and target."""
        return self._source(name).describe()

    def cell_info(self):
        """A :class:`CellInfo` for every known cell, trying to load each (failures are reported, not raised)."""
        infos = []
        for name in self.available_cells():
            try:
                source = self._source(name)
            except CellConflictError as exc:
                infos.append(CellInfo(name, "entry point", "-", "(conflict)", "-", False, str(exc)))
                continue
            error = None
            try:
                self.get_cell(name)
            except CellLoadError as exc:
                error = str(exc)
            infos.append(
                CellInfo(
                    name, source.origin, source._target_text(), source.distribution, source.version, error is None,
                    error,
                )
            )
        return infos


_default_registry = CellRegistry()


def register_cell(name, cell, replace=False):
    """Register a cell under ``name`` in captionkit's registry (see :meth:`CellRegistry.register_cell`)."""
    _default_registry.register_cell(name, cell, replace=replace)


def get_cell(name):
    """The Cell subclass registered as ``name`` (see :meth:`CellRegistry.get_cell`)."""
    return _default_registry.get_cell(name)


def available_cells():
    """Sorted names of all registered cells, plugins included, without importing plugins."""
    return _default_registry.available_cells()


def describe_cell(name):
    """Where cell ``name`` comes from (see :meth:`CellRegistry.describe`)."""
    return _default_registry.describe(name)


def cell_info():
    """Name, origin, distribution, version and load status of every cell (see :class:`CellInfo`)."""
    return _default_registry.cell_info()
