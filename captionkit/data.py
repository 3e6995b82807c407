"""The CS231n assignment's data API (``load_coco_data``, ``sample_coco_minibatch``, ``decode_captions``) and the
rest of the bundle reader's public names, under the module name the assignment and captionkit's users import.

Everything lives in :mod:`captionkit.bundle.reader` (reading and checking) and :mod:`captionkit.bundle.layout`
(file names); this module only gives them their old home.
"""
from captionkit.bundle.reader import (  # noqa: F401 -- the limits are imported from here by tests and users
    DATA_DIR_ENV,
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
    bundle_dir,
    bundle_layout,
    bundle_paths,
    check_bundle,
    checked_dataset,
    decode_captions,
    images_path,
    load_coco_data,
    load_images,
    sample_coco_minibatch,
)

__all__ = ["ENCODER_FILE", "PCA_FILE", "REQUIRED_SPLITS", "SPECIAL_TOKENS", "SPLITS", "BundleError", "bundle_dir",
           "bundle_layout", "bundle_paths", "check_bundle", "checked_dataset", "decode_captions", "images_path",
           "load_coco_data", "load_images", "sample_coco_minibatch"]
