"""The names of a captioning bundle's files: one small module that the reader (:mod:`captionkit.bundle.reader`),
the writer (:mod:`captionkit.bundle.writer`, used by the built-in dataset and ``data import``), the downloader
(:mod:`captionkit.fetch`) and the encoder pipeline share, so none of them imports another for a name.

Two layouts are known: captionkit's own names, which it writes, and the CS231n assignment's COCO bundle's, which it
reads (``coco2014_captions.h5``, ``{split}2014_vgg16_fc7[_pca].h5``, ...).
"""
from pathlib import Path

__all__ = ["ENCODER_FILE", "LAYOUTS", "PCA_FILE", "REQUIRED_SPLITS", "SPLITS", "bundle_layout",
           "bundle_paths", "images_path"]

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")  # a bundle may also have a test split
ENCODER_FILE = "encoder.json"
PCA_FILE = "pca.h5"

# File names per layout: what captionkit writes, and the CS231n assignment's COCO bundle.
LAYOUTS = {
    "captionkit": {"captions": "captions.h5", "vocab": "vocab.json", "features": "{split}_features.h5",
                   "features_pca": "{split}_features_pca.h5", "urls": "{split}_urls.txt",
                   "images": "{split}_images.h5"},
    "cs231n": {"captions": "coco2014_captions.h5", "vocab": "coco2014_vocab.json",
               "features": "{split}2014_vgg16_fc7.h5", "features_pca": "{split}2014_vgg16_fc7_pca.h5",
               "urls": "{split}2014_urls.txt", "images": "{split}2014_images.h5"},
}


def bundle_layout(base_dir):
    """``"cs231n"`` for a directory holding the assignment's ``coco2014_captions.h5`` (and not captionkit's
    ``captions.h5``), else ``"captionkit"``, the names captionkit reads and writes."""
    base = Path(base_dir)
    names = LAYOUTS["cs231n"]
    if not (base / LAYOUTS["captionkit"]["captions"]).exists() and (base / names["captions"]).exists():
        return "cs231n"
    return "captionkit"


def bundle_paths(base_dir, pca_features=True, layout=None, splits=REQUIRED_SPLITS):
    """The files of a bundle: ``{"captions", "vocab", "train_features", "val_features", "train_urls", ...}``.

    ``layout``: ``"captionkit"`` or ``"cs231n"`` (default: :func:`bundle_layout`). ``pca_features``: the
    PCA-reduced features; in captionkit's layout, a bundle without them (one made without ``--pca``, or the
    built-in dataset) gives its only features either way.
    """
    base = Path(base_dir)
    layout = bundle_layout(base) if layout is None else layout
    names = LAYOUTS[layout]
    features = names["features"]
    if pca_features and (layout == "cs231n" or (base / names["features_pca"].format(split="train")).exists()):
        features = names["features_pca"]
    paths = {"captions": base / names["captions"], "vocab": base / names["vocab"]}
    for split in splits:
        paths[f"{split}_features"] = base / features.format(split=split)
        paths[f"{split}_urls"] = base / names["urls"].format(split=split)
    return paths


def images_path(base_dir, split, layout=None):
    """Where a bundle keeps the pixels of ``split``, if it has them: ``{split}_images.h5`` (dataset ``images``).

    Not part of :func:`bundle_paths`: COCO bundles carry image URLs, not pixels; the built-in dataset adds them.
    """
    base = Path(base_dir)
    return base / LAYOUTS[bundle_layout(base) if layout is None else layout]["images"].format(split=split)
