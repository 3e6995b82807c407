"""``encoder.json``: how a bundle's (or a run's) features were made, so that the same encoder can be built again.

``{"format": "captionkit-encoder", "format_version": 1, "encoder": NAME, "argument": ..., "options": {...},
"output_dim": D, "identity": {...}, "distribution": ..., "version": ..., "description": ..., "pca_dim": K or null}``,
plus ``"regions": L`` for an encoder giving a grid of L region vectors of width D (absent for one vector a picture,
so the records of vector encoders stay as they were): what :func:`captionkit.encoders.make_encoder` builds the
encoder from, and the facts (:meth:`Encoder.identity`, e.g. an ONNX file's SHA-256) that a rebuilt encoder must
share. Writers of bundles (the built-in dataset, ``data import``)
use only this module; :mod:`captionkit.encoders.pipeline` reads it back.
"""
import json
from dataclasses import dataclass

from captionkit.encoders.base import EncoderError
from captionkit.encoders.registry import encoder_distribution
from captionkit.safeio import atomic_write_text, check_format, read_json

__all__ = ["FORMAT", "FORMAT_VERSION", "EncoderRecord"]

FORMAT = "captionkit-encoder"
FORMAT_VERSION = 1
MAX_RECORD_BYTES = 2**20  # an encoder.json; a real one is well under 4 KB


@dataclass(frozen=True)
class EncoderRecord:
    """What ``encoder.json`` holds: how to build the encoder again and what it must give."""

    encoder: str
    argument: str | None
    options: dict
    output_dim: int
    identity: dict
    distribution: str
    version: str
    description: str
    pca_dim: int | None = None
    regions: int | None = None

    @property
    def spec(self):
        return self.encoder if self.argument is None else f"{self.encoder}:{self.argument}"

    @property
    def feature_dim(self):
        return self.output_dim if self.pca_dim is None else self.pca_dim

    @property
    def feature_shape(self):
        """One picture's features as the bundle or run holds them: ``(feature_dim,)`` or ``(regions, feature_dim)``
        (a PCA reduces each region's vector)."""
        return (self.feature_dim,) if self.regions is None else (self.regions, self.feature_dim)

    @classmethod
    def of(cls, encoder, pca_dim=None):
        distribution, version = encoder_distribution(encoder.name())
        return cls(encoder.name(), encoder.argument_value, dict(encoder.options), int(encoder.dim),
                   _plain(encoder.identity()), distribution, version, encoder.describe(), pca_dim,
                   None if encoder.regions is None else int(encoder.regions))

    def with_pca(self, pca_dim):
        return EncoderRecord(**{**self.to_dict(), "pca_dim": pca_dim})

    def to_dict(self):
        return {"encoder": self.encoder, "argument": self.argument, "options": self.options,
                "output_dim": self.output_dim, "identity": self.identity, "distribution": self.distribution,
                "version": self.version, "description": self.description, "pca_dim": self.pca_dim,
                **({} if self.regions is None else {"regions": self.regions})}

    def save(self, path):
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.to_dict()}
        atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path):
        document = read_json(path, MAX_RECORD_BYTES, "encoder record", EncoderError)
        check_format(document, path, FORMAT, FORMAT_VERSION, "encoder record", EncoderError)
        fields = {"encoder": str, "options": dict, "output_dim": int, "identity": dict, "distribution": str,
                  "version": str, "description": str}
        for key, kind in fields.items():
            if not isinstance(document.get(key), kind) or isinstance(document.get(key), bool):
                raise EncoderError(f"{path}: {key!r} must be a {kind.__name__}, got {document.get(key)!r}")
        for key in ("argument", "pca_dim", "regions"):
            expected = str if key == "argument" else int
            value = document.get(key)
            if value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
                raise EncoderError(f"{path}: {key!r} must be a {expected.__name__} or null, got {value!r}")
        if document.get("regions") is not None and document["regions"] < 1:
            raise EncoderError(f"{path}: 'regions' must be at least 1, got {document['regions']!r}")
        return cls(**{key: document.get(key) for key in (*fields, "argument", "pca_dim", "regions")})


def _plain(value):
    """``value`` as JSON would give it back (tuples as lists), so a loaded record compares equal to a new one."""
    return json.loads(json.dumps(value))
