"""What an image encoder is: a named, configured function from RGB pictures to feature vectors (or grids of them).

An encoder plugin subclasses :class:`Encoder` and is listed in the entry-point group ``captionkit.encoders``
(docs/own-data.md). captionkit builds it from the text a user gives, ``NAME`` or ``NAME:ARGUMENT`` plus
``KEY=VALUE`` options, records what it was built from in a bundle's ``encoder.json``, and builds it again from
that record to caption new pictures; :meth:`Encoder.identity` tells whether the second one gives the same
features as the first.
"""
import numpy as np

__all__ = ["Encoder", "EncoderError"]


class EncoderError(ValueError):
    """An encoder cannot be built or run: a bad argument or option, a missing file or dependency."""


class Encoder:
    """Turns pictures (uint8 RGB arrays of any size) into feature vectors of a fixed width, or into grids of them:
    one vector per image region (an attention model's input).

    Subclasses set the class attributes and implement :meth:`encode`:

    - ``output_dim``: the feature width when it is fixed (``None`` when it depends on the argument; then the
      instance's :attr:`dim` gives it);
    - ``regions``: None for one vector a picture, else the number L of regions of its grid (an instance sets it
      when an option or the model decides);
    - ``argument``: how the text after ``NAME:`` reads in help (``"PATH[:OUTPUT]"``), None when it takes none;
    - ``option_help``: ``{option: help}`` of the ``KEY=VALUE`` options it accepts;
    - ``batch_size``: pictures per :meth:`encode` call;
    - ``summary``: one line for ``captionkit encoders``;
    - ``decode_size``: (height, width) the smallest picture :meth:`encode` needs, so that a JPEG file is decoded
      at a reduced scale (None: at full size);

    and may override :meth:`reduce`, which shrinks each picture as soon as it is read from its file.
    """

    output_dim = None
    regions = None
    argument = None
    option_help = {}
    batch_size = 64
    summary = ""
    decode_size = None

    def __init__(self, argument=None, options=None):
        options = dict(options or {})
        if argument is not None and self.argument is None:
            raise EncoderError(f"encoder {self.name()!r} takes no argument, got {argument!r}")
        unknown = sorted(set(options) - set(self.option_help))
        if unknown:
            known = ", ".join(sorted(self.option_help)) or "none"
            raise EncoderError(f"encoder {self.name()!r} has no option {unknown[0]!r} (its options: {known})")
        self.argument_value = argument
        self.options = options

    def name(self):
        """The name the encoder was built under (the registry sets ``registered_name``; else the class name)."""
        return getattr(self, "registered_name", type(self).__name__)

    @classmethod
    def requirements_problem(cls):
        """Why this encoder cannot run here (a missing library, named with how to install it), or None.

        Checked without importing heavy libraries, so that ``captionkit encoders`` stays quick."""
        return None

    @property
    def dim(self):
        """The width of the feature vectors :meth:`encode` returns."""
        if self.output_dim is None:
            raise NotImplementedError(f"{type(self).__name__} must set output_dim or override dim")
        return self.output_dim

    @property
    def output_shape(self):
        """The shape of one picture's features: ``(dim,)``, or ``(regions, dim)`` for a grid."""
        return (self.dim,) if self.regions is None else (self.regions, self.dim)

    def encode(self, images):
        """Features (len(images), *output_shape) float32 of ``images``, a sequence of (H, W, 3) uint8 arrays."""
        raise NotImplementedError

    def reduce(self, image):
        """``image`` brought to the size :meth:`encode` brings it to, with the same features; picture files are
        reduced one by one as they are read, so that a batch holds model-sized pictures only. Default: unchanged."""
        return image

    def identity(self):
        """JSON-able facts that two encoders giving the same features share (a weights file's digest, an input
        size); compared when a bundle's recorded encoder is built again. Default: none beyond name and options."""
        return {}

    def describe(self):
        """One line saying what this configured encoder does, for command output."""
        return self.summary


def feature_shape(encoder):
    """One picture's features' shape for ``encoder``: its :attr:`Encoder.output_shape`, or ``(dim,)`` for an object
    that is not an :class:`Encoder` but has ``dim`` and ``encode`` (which the pipeline also takes)."""
    return tuple(getattr(encoder, "output_shape", (encoder.dim,)))


def check_features(encoder, features, count):
    """``features`` as float32 (count, *output_shape), or EncoderError naming the encoder when it returned something
    else."""
    features = np.asarray(features)
    expected = (count, *feature_shape(encoder))
    if features.shape != expected or features.dtype.kind != "f":
        raise EncoderError(f"encoder {encoder.name()!r} returned {features.dtype} {features.shape} for {count} "
                           f"images, expected floats of shape {expected}")
    if not np.isfinite(features).all():
        raise EncoderError(f"encoder {encoder.name()!r} returned non-finite features")
    return features.astype(np.float32, copy=False)
