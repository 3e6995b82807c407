"""The encoder registry: maps names to Encoder classes (a :class:`captionkit.plugins.PluginRegistry`).

``shapes`` and ``onnx`` are built in; plugins add encoders through the entry-point group ``captionkit.encoders``
(captionkit's own: ``plugins/captionkit-torchvision`` with ``resnet50`` and ``vgg16``). :func:`make_encoder` builds
one from the text users give: ``NAME``, or ``NAME:ARGUMENT`` (``onnx:model.onnx``), plus ``KEY=VALUE`` options.
"""
from captionkit.encoders.base import Encoder, EncoderError
from captionkit.plugins import PluginConflictError, PluginLoadError, PluginRegistry, UnknownPluginError

__all__ = [
    "ENTRY_POINT_GROUP",
    "EncoderRegistry",
    "available_encoders",
    "encoder_info",
    "get_encoder",
    "make_encoder",
    "parse_options",
    "register_encoder",
]

ENTRY_POINT_GROUP = "captionkit.encoders"
BUILTIN_ENCODERS = {
    "shapes": "captionkit.encoders.shapes:ShapesEncoder",
    "onnx": "captionkit.encoders.onnx_file:OnnxEncoder",
}


class UnknownEncoderError(UnknownPluginError, EncoderError):
    """No encoder is registered under the requested name."""


class EncoderLoadError(PluginLoadError):
    """A registered encoder could not be imported, is not an Encoder subclass, or cannot run here."""


class EncoderConflictError(PluginConflictError, EncoderError):
    """Two installed distributions claim the same encoder name."""


class EncoderRegistry(PluginRegistry):
    """A set of encoder sources with lazy loading. captionkit uses one module-level instance; tests make their own."""

    kind = "encoder"
    name_label = "encoder"
    base = Encoder
    base_name = "captionkit.encoders.Encoder"
    unknown_error = UnknownEncoderError
    load_error = EncoderLoadError
    conflict_error = EncoderConflictError
    install_hints = {"resnet50": "captionkit-torchvision", "vgg16": "captionkit-torchvision"}

    def __init__(self, builtins=None, entry_point_group=ENTRY_POINT_GROUP, autoload_plugins=None):
        super().__init__(BUILTIN_ENCODERS if builtins is None else builtins, entry_point_group, autoload_plugins)

    def problem(self, target, source):
        dim = target.output_dim
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            return f"its output_dim is {dim!r}, expected a positive integer or None"
        return target.requirements_problem()

    def load(self, name):
        encoder = super().load(name)
        if "registered_name" not in vars(encoder):
            encoder.registered_name = name
        return encoder


_default_registry = EncoderRegistry()


def register_encoder(name, encoder, replace=False):
    """Register an Encoder subclass (or ``"module:Class"`` path) as ``name`` (see :meth:`PluginRegistry.register`)."""
    _default_registry.register(name, encoder, replace=replace)


def get_encoder(name):
    """The Encoder subclass registered as ``name``."""
    return _default_registry.load(name)


def available_encoders():
    """Sorted names of all registered encoders, plugins included, without importing plugins."""
    return _default_registry.available()


def encoder_info():
    """Name, origin, distribution, version and load status of every encoder (:class:`captionkit.plugins.PluginInfo`)."""
    return _default_registry.info()


def encoder_distribution(name):
    """(distribution, version) providing encoder ``name``."""
    return _default_registry.distribution(name)


def parse_options(pairs):
    """``["size=224", "mean=0.5,0.5,0.5"]`` -> ``{"size": "224", ...}``; EncoderError names a malformed pair."""
    options = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise EncoderError(f"encoder option {pair!r} is not KEY=VALUE")
        if key in options:
            raise EncoderError(f"encoder option {key!r} is given twice")
        options[key] = value.strip()
    return options


def make_encoder(spec, options=None):
    """An encoder built from ``"NAME"`` or ``"NAME:ARGUMENT"`` and ``{KEY: VALUE}`` options.

    Raises EncoderError (a ValueError) for an unknown name or a bad argument or option, and EncoderLoadError
    (an ImportError) naming the distribution when the encoder's plugin cannot load or lacks a library.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EncoderError(f"an encoder is named NAME or NAME:ARGUMENT, got {spec!r}")
    name, sep, argument = spec.strip().partition(":")
    encoder_class = get_encoder(name)
    if sep and not argument:
        raise EncoderError(f"encoder {spec!r}: nothing after ':'")
    if encoder_class.argument is not None and not sep:
        raise EncoderError(f"encoder {name!r} needs an argument: {name}:{encoder_class.argument}")
    encoder = encoder_class(argument if sep else None, options)
    encoder.registered_name = name  # the name it was built under, should one class be registered under two
    return encoder
