"""The CS231n assignment's data API (``load_coco_data``, ``sample_coco_minibatch``, ``decode_captions``) and the
rest of the bundle reader's public names, under the module name the assignment and captionkit's users import.

Reading and checking live in :mod:`captionkit.bundle.reader`, file names in :mod:`captionkit.bundle.layout`. This
module adds the one thing they do not know: which bundle no directory means (:func:`bundle_dir`:
``$CAPTIONKIT_DATA_DIR``, else the built-in dataset, which :mod:`captionkit.synthetic` writes), so the reader
never reaches up to the dataset generator that writes through the bundle writer.
"""
import os
from pathlib import Path

from captionkit.bundle import reader
from captionkit.bundle.reader import (  # noqa: F401 -- the limits are imported from here by tests and users
    ENCODER_FILE,
    MAX_INFLATION,
    MAX_URL_CHARS,
    MAX_VOCAB_BYTES,
    PCA_FILE,
    REQUIRED_SPLITS,
    SPECIAL_TOKENS,
    SPLITS,
    URL_ARRAY_FACTOR,
    URL_ARRAY_FLOOR,
    BundleError,
    bundle_layout,
    bundle_paths,
    check_bundle,
    checked_dataset,
    decode_captions,
    images_path,
    sample_coco_minibatch,
)

__all__ = ["ENCODER_FILE", "PCA_FILE", "REQUIRED_SPLITS", "SPECIAL_TOKENS", "SPLITS", "BundleError", "bundle_dir",
           "bundle_layout", "bundle_paths", "check_bundle", "checked_dataset", "decode_captions", "feature_shape",
           "images_path", "load_coco_data", "load_images", "sample_coco_minibatch"]

DATA_DIR_ENV = "CAPTIONKIT_DATA_DIR"


def bundle_dir(base_dir=None, progress=None):
    """The bundle directory meant by ``base_dir``: itself, or when None ``$CAPTIONKIT_DATA_DIR`` if set, else
    captionkit's built-in dataset (generated and cached on first use; ``progress(stage, done, total)`` hears about
    that first build)."""
    if base_dir is not None:
        return Path(base_dir)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    from captionkit.synthetic import builtin_dataset_dir  # only when needed: building it imports the encoders

    return builtin_dataset_dir(progress=progress)


def load_coco_data(base_dir=None, max_train=None, pca_features=True):
    """:func:`captionkit.bundle.reader.load_coco_data` of the bundle :func:`bundle_dir` finds for ``base_dir``."""
    return reader.load_coco_data(bundle_dir(base_dir), max_train=max_train, pca_features=pca_features)


def feature_shape(base_dir=None, pca_features=True):
    """:func:`captionkit.bundle.reader.feature_shape` of the bundle :func:`bundle_dir` finds for ``base_dir``."""
    return reader.feature_shape(bundle_dir(base_dir), pca_features=pca_features)


def load_images(base_dir, split, indices):
    """:func:`captionkit.bundle.reader.load_images` of the bundle :func:`bundle_dir` finds for ``base_dir``."""
    return reader.load_images(bundle_dir(base_dir), split, indices)
