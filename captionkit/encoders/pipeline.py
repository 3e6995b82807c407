"""From picture files to the features a model was trained on, the same way every time.

A bundle made by ``captionkit data import`` (and the built-in dataset) records how its features were made:

- ``encoder.json`` (:mod:`captionkit.encoders.record`): the encoder's name, argument, options and identity;
- ``pca.h5`` (when ``pca_dim`` is set): ``mean`` (D,) and ``components`` (K, D) float64; reduced features are
  ``(features - mean) @ components.T``.

A training run copies both into its directory (with ``"pca_dim"`` set to what the run trained on), so
:class:`FeaturePipeline` can give new pictures the features its model expects.
"""
from pathlib import Path

import numpy as np

from captionkit.bundle.layout import ENCODER_FILE, PCA_FILE, bundle_paths
from captionkit.bundle.reader import BundleError, checked_dataset
from captionkit.encoders.base import EncoderError, check_features, feature_shape
from captionkit.encoders.record import EncoderRecord
from captionkit.encoders.registry import make_encoder
from captionkit.images import MAX_PICTURE_PIXELS, ImageFileError, read_image
from captionkit.safeio import atomic_write, hdf5_errors, read_bounded

__all__ = ["EncoderRecord", "FeaturePipeline", "Pca", "copy_record", "encode_files"]

MAX_PCA_BYTES = 2**30  # a PCA of 2048 features to 2048 values, float64, is 32 MiB: copied whole into each run


def encode_files(encoder, paths, progress=None, skip_unreadable=False, max_pixels=MAX_PICTURE_PIXELS):
    """Features (len(paths), *output_shape) float32 of the picture files ``paths``, read and encoded in batches.

    Each picture is reduced by the encoder (:meth:`Encoder.reduce`) as soon as it is read, so a batch's memory is
    that of model-sized pictures plus the one being decoded; a picture declaring more than ``max_pixels`` pixels is
    refused as unreadable. ``progress(done, total)`` after each batch. A missing or unreadable file raises
    ImageFileError naming it; with ``skip_unreadable`` it is reported instead: returns ``(features, skipped)``
    where ``skipped`` lists ``(index, message)`` and those rows are NaN. Without it, returns the features alone.
    """
    # Any object with batch_size, dim and encode will do; an Encoder's reduce and decode_size are used when there.
    reduce, decode_size = getattr(encoder, "reduce", None), getattr(encoder, "decode_size", None)
    total = len(paths)
    features = np.empty((total, *feature_shape(encoder)), dtype=np.float32)
    skipped = []
    for start in range(0, total, encoder.batch_size):
        pictures, rows = [], []
        for row in range(start, min(start + encoder.batch_size, total)):
            try:
                picture = read_image(paths[row], decode_size, max_pixels)
                pictures.append(picture if reduce is None else reduce(picture))
            except ImageFileError as exc:
                if not skip_unreadable:
                    raise
                skipped.append((row, str(exc)))
                features[row] = np.nan
                continue
            rows.append(row)
        if pictures:
            features[rows] = check_features(encoder, encoder.encode(pictures), len(pictures))
        if progress is not None:
            progress(min(start + encoder.batch_size, total), total)
    return (features, skipped) if skip_unreadable else features


class Pca:
    """A fixed linear reduction of features: ``(x - mean) @ components.T``; fitted once, on training features. On
    grids (N, L, D) each region's vector is reduced alike (N, L, K), the regions counting as samples of the fit."""

    def __init__(self, mean, components):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.components = np.asarray(components, dtype=np.float64)

    @property
    def dim(self):
        return self.components.shape[0]

    @classmethod
    def fit(cls, features, dim):
        """The ``dim`` principal directions of ``features`` (N, D) or (N, L, D); each direction's sign makes its
        largest entry positive, so the same features always give the same reduction."""
        features = np.asarray(features, dtype=np.float64)
        features = features.reshape(-1, features.shape[-1])
        count, width = features.shape
        if not 1 <= dim <= min(count, width):
            raise ValueError(f"--pca {dim}: PCA reduces to at most min(number of training images, feature width) "
                             f"= min({count}, {width})")
        mean = features.mean(axis=0)
        centred = features - mean
        # Eigenvectors of the D x D covariance: cheaper than an SVD of the N x D matrix when N is much larger.
        values, vectors = np.linalg.eigh(centred.T @ centred)
        components = vectors[:, ::-1][:, :dim].T
        signs = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
        return cls(mean, components * signs[:, None])

    def transform(self, features):
        return ((np.asarray(features, dtype=np.float64) - self.mean) @ self.components.T).astype(np.float32)

    def save(self, path):
        """Write ``mean`` and ``components`` into the HDF5 file ``path`` (a bundle writes into a staging folder)."""
        import h5py

        with h5py.File(path, "w") as h5:
            h5.create_dataset("mean", data=self.mean, track_times=False)
            h5.create_dataset("components", data=self.components, track_times=False)

    @classmethod
    def load(cls, path):
        import h5py

        path = Path(path)
        if not path.is_file():
            raise EncoderError(f"{path}: file not found (the PCA the features were reduced with)")
        with hdf5_errors(path, EncoderError), h5py.File(path, "r") as h5:
            # Links, stored sizes and shapes are checked on the metadata, before any array is allocated.
            mean = checked_dataset(path, h5, "mean", error=EncoderError)
            components = checked_dataset(path, h5, "components", error=EncoderError)
            if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
                raise EncoderError(f"{path}: 'mean' {mean.shape} and 'components' {components.shape} do not fit "
                                   "(expected (D,) and (K, D))")
            mean, components = mean[()], components[()]
        return cls(mean, components)


class FeaturePipeline:
    """The encoder and PCA recorded in a directory (a bundle or a run): picture files -> a model's features."""

    def __init__(self, record, encoder, pca=None):
        self.record, self.encoder, self.pca = record, encoder, pca

    @classmethod
    def load(cls, directory, encoder_file=ENCODER_FILE, pca_file=PCA_FILE):
        """Build the encoder ``directory/encoder.json`` records (and its PCA) and check that it is the same one.

        Raises EncoderError naming what differs: a different file behind the same name (its digest), another
        output size; EncoderLoadError when the encoder's plugin is not installed.
        """
        directory = Path(directory)
        record = EncoderRecord.load(directory / encoder_file)
        encoder = make_encoder(record.spec, record.options)
        rebuilt = EncoderRecord.of(encoder, record.pca_dim)
        for key in ("output_dim", "regions", "identity"):
            old, new = getattr(record, key), getattr(rebuilt, key)
            if old != new:
                raise EncoderError(f"{directory / encoder_file}: encoder {record.spec!r} no longer gives the features "
                                   f"recorded: {_difference(key, old, new)}")
        pca = None
        if record.pca_dim is not None:
            pca = Pca.load(directory / pca_file)
            if pca.components.shape != (record.pca_dim, record.output_dim):
                raise EncoderError(f"{directory / pca_file}: components have shape {pca.components.shape}, but "
                                   f"{encoder_file} says ({record.pca_dim}, {record.output_dim})")
        return cls(record, encoder, pca)

    @property
    def dim(self):
        return self.record.feature_dim

    @property
    def feature_shape(self):
        """One picture's features' shape, what a model's ``spec.fits(feature_shape=...)`` checks: ``(D,)`` or
        ``(L, D)``."""
        return self.record.feature_shape

    def encode_files(self, paths, progress=None, skip_unreadable=False, max_pixels=MAX_PICTURE_PIXELS):
        """Features (len(paths), *feature_shape) float32 of picture files, as the recorded bundle's were made; with
        ``skip_unreadable``, ``(features, skipped)`` as :func:`encode_files` returns them (skipped rows NaN)."""
        encoded = encode_files(self.encoder, paths, progress, skip_unreadable, max_pixels)
        features, skipped = encoded if skip_unreadable else (encoded, None)
        if self.pca is not None:
            features = self.pca.transform(features)
        return (features, skipped) if skip_unreadable else features


def _difference(key, old, new):
    if key == "output_dim":
        return f"it was {old} values wide, it is now {new}"
    if key == "regions":
        return f"it gave {_grid_text(old)}, it now gives {_grid_text(new)}"
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    first = changed[0]
    return f"{first} was {old.get(first)!r}, it is now {new.get(first)!r}"


def _grid_text(regions):
    return "one vector a picture" if regions is None else f"a grid of {regions} regions"


def copy_record(bundle, pca_features, destination):
    """Record in ``destination`` (a run directory) how the features a run trains on were made: the bundle's
    ``encoder.json`` with ``pca_dim`` set to the features chosen by ``pca_features``, and ``pca.h5`` when those
    are reduced. Returns the record, or None for a bundle that records no encoder (the CS231n COCO bundle)."""
    bundle, destination = Path(bundle), Path(destination)
    source = bundle / ENCODER_FILE
    if not source.is_file():
        return None
    try:
        record = EncoderRecord.load(source)
    except EncoderError as exc:
        raise BundleError(str(exc)) from None
    reduced = bundle_paths(bundle, pca_features)["train_features"].name.endswith("_pca.h5")
    if reduced and record.pca_dim is None:
        raise BundleError(f"{source}: the bundle has PCA-reduced features but its encoder record has no pca_dim")
    if reduced:
        pca = read_bounded(bundle / PCA_FILE, MAX_PCA_BYTES, "PCA file", BundleError)
        with atomic_write(destination / PCA_FILE) as f:
            f.write(pca)
    else:
        (destination / PCA_FILE).unlink(missing_ok=True)
    record = record.with_pca(record.pca_dim if reduced else None)
    record.save(destination / ENCODER_FILE)
    return record
