"""Bundle file names under their old module name: :mod:`captionkit.bundle.layout` holds them (and
:mod:`captionkit.vocabulary` the special tokens)."""
from captionkit.bundle.layout import (
    ENCODER_FILE,
    LAYOUTS,
    PCA_FILE,
    REQUIRED_SPLITS,
    SPLITS,
    bundle_layout,
    bundle_paths,
    images_path,
)
from captionkit.vocabulary import SPECIAL_TOKENS

__all__ = ["ENCODER_FILE", "LAYOUTS", "PCA_FILE", "REQUIRED_SPLITS", "SPECIAL_TOKENS", "SPLITS", "bundle_layout",
           "bundle_paths", "images_path"]
