"""Plugin registries: names mapped to classes from three sources, loaded lazily, failures named by distribution.

captionkit has two kinds of plugins, recurrent cells (:mod:`captionkit.cells.registry`) and image encoders
(:mod:`captionkit.encoders.registry`); both are a :class:`PluginRegistry` over these sources, in order of precedence:

1. built-in entries, named by dotted path and imported on first use;
2. entries registered at run time (:meth:`PluginRegistry.register`);
3. entry points in the registry's group (``captionkit.cells``, ``captionkit.encoders``) of installed
   distributions. Discovery reads only their names (no plugin code runs); a plugin is imported when its name is
   first asked for, then checked by the registry's :meth:`~PluginRegistry.problem`. A plugin that fails to import
   or to pass that check is reported with its distribution's name and version, only to whoever asks for it.

Setting ``CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD=1`` ignores entry points: installing a plugin means trusting its code,
and this switch runs captionkit with its built-in cells and encoders only.
"""
import difflib
import importlib
import importlib.metadata
import os
from dataclasses import dataclass

from captionkit._about import __version__

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "PluginConflictError",
    "PluginInfo",
    "PluginLoadError",
    "PluginRegistry",
    "UnknownPluginError",
    "autoload_disabled",
]

DISABLE_AUTOLOAD_ENV = "CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD"


def autoload_disabled():
    """Whether ``CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD`` asks to ignore entry points."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() not in ("", "0")


class UnknownPluginError(ValueError):
    """No entry is registered under the requested name."""


class PluginLoadError(ImportError):
    """A registered entry could not be imported, is not the registry's kind of class, or fails its check."""


class PluginConflictError(ValueError):
    """Two installed distributions claim the same name."""


@dataclass(frozen=True)
class PluginInfo:
    """What :meth:`PluginRegistry.info` reports about one name."""

    name: str
    origin: str  # "built in", "registered" or "entry point"
    target: str  # dotted path "module:attr", or the class's qualified name
    distribution: str  # distribution name ("captionkit" for built-ins)
    version: str
    loads: bool
    error: str | None = None
    loaded: object = None  # the class, when it loads


@dataclass(frozen=True)
class _Source:
    origin: str
    target: object  # "module:attr" string or a class
    distribution: str
    version: str

    def describe(self):
        return f"distribution {self.distribution} {self.version} ({self.origin} {self.target_text()})"

    def target_text(self):
        if isinstance(self.target, str):
            return self.target
        return f"{self.target.__module__}:{self.target.__qualname__}"


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


class PluginRegistry:
    """Names -> classes (subclasses of ``base``) from built-ins, run-time registrations and entry points.

    Subclasses set ``kind`` (the word used in messages, e.g. "cell"), ``name_label``, ``base`` and ``base_name``, the three error classes and
    ``install_hints`` ({name: distribution} of captionkit's own plugins, so that asking for one that is not
    installed says how to get it), and may override :meth:`problem`.
    """

    kind = "plugin"
    name_label = "plugin"  # what the name is called where users give it ("cell_type", "encoder")
    base = object
    base_name = "object"  # how users import ``base``, for messages
    unknown_error = UnknownPluginError
    load_error = PluginLoadError
    conflict_error = PluginConflictError
    install_hints = {}
    install_options = ""  # pip options the hinted plugins need (cells build against the installed captionkit)

    def __init__(self, builtins, entry_point_group, autoload_plugins=None):
        self._builtins = dict(builtins)
        self._registered = {}
        self._group = entry_point_group
        self._autoload = not autoload_disabled() if autoload_plugins is None else autoload_plugins
        self._plugins = None  # name -> list of _Source, filled on first need
        self._loaded = {}  # name -> class

    @property
    def entry_point_group(self):
        return self._group

    def problem(self, target, source):
        """Why the loaded class ``target`` from ``source`` cannot be used (a sentence), or None."""
        return None

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
        """The source that provides ``name``; raises the registry's unknown or conflict error."""
        if name in self._builtins:
            return _Source("built in", self._builtins[name], "captionkit", __version__)
        if name in self._registered:
            return self._registered[name]
        sources = self._plugin_sources().get(name, [])
        if len(sources) > 1:
            claimants = "; ".join(s.describe() for s in sources)
            raise self.conflict_error(
                f"{self.kind} {name!r} is claimed by more than one installed distribution: {claimants}. "
                "Uninstall all but one of them."
            )
        if sources:
            return sources[0]
        raise self.unknown_error(self._unknown_message(name))

    def _unknown_message(self, name):
        known = self.available()
        message = f"unknown {self.name_label} {name!r}"
        close = difflib.get_close_matches(str(name), known + list(self.install_hints), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        message += f"; registered {self.kind}s: {', '.join(known) or 'none'}"
        if name in self.install_hints:
            dist = self.install_hints[name]
            message += (
                f". The {name!r} {self.kind} is provided by the plugin distribution {dist}: install it with "
                f"`pip install {self.install_options}plugins/{dist}` from a captionkit checkout"
            )
            if not self._autoload:
                message += f" (plugins are disabled now because {DISABLE_AUTOLOAD_ENV} is set)"
        return message

    # ------------------------------------------------------------------ public API
    def register(self, name, target, replace=False):
        """Register ``target`` (a subclass of ``base``, or a ``"module:Class"`` path imported lazily) as ``name``.

        Built-in names cannot be replaced; an existing registration is replaced only with ``replace=True``.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{self.kind} name must be an identifier-like string, got {name!r}")
        if not isinstance(target, str) and not (isinstance(target, type) and issubclass(target, self.base)):
            raise TypeError(
                f"{self.kind} must be a {self.base_name} subclass or a "
                f"'module:Class' path, got {target!r}"
            )
        if name in self._builtins:
            raise ValueError(f"{name!r} is a built-in {self.kind} and cannot be replaced")
        if name in self._registered and not replace:
            raise ValueError(f"a {self.kind} named {name!r} is already registered; pass replace=True to replace it")
        self._registered[name] = _Source("registered", target, "(run time)", "-")
        self._loaded.pop(name, None)

    def available(self):
        """Sorted names of every known entry, without importing any plugin."""
        return sorted(set(self._builtins) | set(self._registered) | set(self._plugin_sources()))

    def load(self, name):
        """The class registered as ``name``, importing and checking it on first use.

        Raises the registry's unknown error (a ValueError) naming the registered entries, its conflict error when
        two distributions claim the name, or its load error naming the distribution when the plugin fails.
        """
        if name in self._loaded:
            return self._loaded[name]
        source = self._source(name)
        target = source.target
        if isinstance(target, str):
            try:
                target = _import_target(target)
            except Exception as exc:  # a plugin may raise anything on import; report it with its origin
                raise self.load_error(
                    f"{self.kind} {name!r} from {source.describe()} failed to load: {_describe_import_error(exc)}"
                ) from exc
        if not (isinstance(target, type) and issubclass(target, self.base)):
            raise self.load_error(
                f"{self.kind} {name!r} from {source.describe()} is {target!r}, not a {self.base_name} subclass"
            )
        problem = self.problem(target, source)
        if problem:
            raise self.load_error(f"{self.kind} {name!r} from {source.describe()} is broken: {problem}")
        self._loaded[name] = target
        return target

    def describe(self, name):
        """Where ``name`` comes from, for messages: its distribution, version, origin and target."""
        return self._source(name).describe()

    def distribution(self, name):
        """(distribution name, version) that provides ``name``."""
        source = self._source(name)
        return source.distribution, source.version

    def info(self):
        """A :class:`PluginInfo` for every known name, trying to load each (failures are reported, not raised)."""
        infos = []
        for name in self.available():
            try:
                source = self._source(name)
            except PluginConflictError as exc:
                infos.append(PluginInfo(name, "entry point", "-", "(conflict)", "-", False, str(exc)))
                continue
            error, loaded = None, None
            try:
                loaded = self.load(name)
            except PluginLoadError as exc:
                error = str(exc)
            infos.append(PluginInfo(name, source.origin, source.target_text(), source.distribution, source.version,
                                    error is None, error, loaded))
        return infos
