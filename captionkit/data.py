"""Reading and checking datasets in the COCO captioning bundle layout of the CS231n assignment.

A bundle is a directory holding, under the names captionkit writes (the assignment's names in brackets, still
read):

- ``captions.h5`` [``coco2014_captions.h5``]: ``train_captions`` (N, T) int, ``train_image_idxs`` (N,) int,
  ``val_captions``, ``val_image_idxs``, and optionally ``test_captions``, ``test_image_idxs``; each caption row is
  ``<START>`` words ``<END>`` then ``<NULL>`` padding;
- ``{split}_features.h5`` [``{split}2014_vgg16_fc7.h5``]: dataset ``features`` (num_images, D) float, the image
  encoder's output; ``{split}_features_pca.h5`` [``{split}2014_vgg16_fc7_pca.h5``]: the same reduced by PCA;
- ``vocab.json`` [``coco2014_vocab.json``]: ``{"idx_to_word": [...], "word_to_idx": {...}}`` with ``<NULL>``=0,
  ``<START>``=1, ``<END>``=2, ``<UNK>``=3;
- ``{split}_urls.txt`` [``{split}2014_urls.txt``]: one image per line: a URL, or the image file's path;
- optionally ``{split}_images.h5`` [``{split}2014_images.h5``]: dataset ``images`` (num_images, H, W, 3) uint8;
- optionally ``encoder.json`` and ``pca.h5``: how the features were made (:mod:`captionkit.encoders.pipeline`), so
  that new images can go through the same pipeline.

A directory holding ``captions.h5`` is read with captionkit's names, one holding ``coco2014_captions.h5`` with the
assignment's. Every entry point (API, solver, CLI) reads bundles through :func:`load_coco_data`, so they all get
the same checks; a problem raises :class:`BundleError` naming the file, key and offending value.
"""
import json
import os
from pathlib import Path

import numpy as np

__all__ = [
    "ENCODER_FILE",
    "PCA_FILE",
    "REQUIRED_SPLITS",
    "SPECIAL_TOKENS",
    "SPLITS",
    "BundleError",
    "bundle_dir",
    "bundle_layout",
    "bundle_paths",
    "decode_captions",
    "images_path",
    "load_coco_data",
    "load_images",
    "sample_coco_minibatch",
]

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")  # a bundle may also have a test split
SPECIAL_TOKENS = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3}
DATA_DIR_ENV = "CAPTIONKIT_DATA_DIR"
ENCODER_FILE = "encoder.json"
PCA_FILE = "pca.h5"

# File names per layout: what captionkit writes, and the CS231n assignment's COCO bundle.
_LAYOUTS = {
    "captionkit": {"captions": "captions.h5", "vocab": "vocab.json", "features": "{split}_features.h5",
                   "features_pca": "{split}_features_pca.h5", "urls": "{split}_urls.txt",
                   "images": "{split}_images.h5"},
    "cs231n": {"captions": "coco2014_captions.h5", "vocab": "coco2014_vocab.json",
               "features": "{split}2014_vgg16_fc7.h5", "features_pca": "{split}2014_vgg16_fc7_pca.h5",
               "urls": "{split}2014_urls.txt", "images": "{split}2014_images.h5"},
}


class BundleError(ValueError):
    """A dataset bundle is missing a file or key, or holds values that cannot be right."""


def bundle_layout(base_dir):
    """``"cs231n"`` for a directory holding the assignment's ``coco2014_captions.h5`` (and not captionkit's
    ``captions.h5``), else ``"captionkit"``, the names captionkit reads and writes."""
    base = Path(base_dir)
    names = _LAYOUTS["cs231n"]
    if not (base / _LAYOUTS["captionkit"]["captions"]).exists() and (base / names["captions"]).exists():
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
    names = _LAYOUTS[layout]
    features = names["features"]
    if pca_features and (layout == "cs231n" or (base / names["features_pca"].format(split="train")).exists()):
        features = names["features_pca"]
    paths = {"captions": base / names["captions"], "vocab": base / names["vocab"]}
    for split in splits:
        paths[f"{split}_features"] = base / features.format(split=split)
        paths[f"{split}_urls"] = base / names["urls"].format(split=split)
    return paths


def bundle_dir(base_dir=None):
    """The bundle directory meant by ``base_dir``: itself, or when None ``$CAPTIONKIT_DATA_DIR`` if set, else
    captionkit's built-in dataset (generated and cached on first use)."""
    if base_dir is not None:
        return Path(base_dir)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    from captionkit.synthetic import builtin_dataset_dir

    return builtin_dataset_dir()


def _require_file(path):
    if not path.is_file():
        raise BundleError(f"{path}: file not found (a COCO captioning bundle needs it)")


def _read_h5_datasets(path, keys):
    """Read the named datasets of an HDF5 file into arrays, turning every I/O problem into a BundleError."""
    import h5py

    _require_file(path)
    try:
        with h5py.File(path, "r") as f:
            arrays = {}
            for key in keys:
                if key not in f:
                    raise BundleError(f"{path}: missing dataset {key!r} (found: {', '.join(sorted(f.keys()))})")
                node = f[key]
                if not isinstance(node, h5py.Dataset):
                    raise BundleError(f"{path}: {key!r} is a group, expected a dataset")
                if node.dtype.kind not in "iuf":
                    raise BundleError(f"{path}: dataset {key!r} has dtype {node.dtype}, expected numbers")
                arrays[key] = node[()]
            return arrays
    except BundleError:
        raise
    except (OSError, KeyError, ValueError) as exc:  # h5py raises these for truncated or corrupt files
        raise BundleError(f"{path}: cannot read HDF5 file ({exc})") from exc


def _check_integer(path, key, array, ndim):
    if array.dtype.kind not in "iu":
        raise BundleError(f"{path}: dataset {key!r} has dtype {array.dtype}, expected integers")
    if array.ndim != ndim:
        raise BundleError(f"{path}: dataset {key!r} has shape {array.shape}, expected {ndim} dimensions")


def _captioned_splits(path):
    """The splits whose captions ``path`` holds: train and val, and test when the file has it."""
    import h5py

    _require_file(path)
    try:
        with h5py.File(path, "r") as f:
            has_test = "test_captions" in f or "test_image_idxs" in f
    except OSError as exc:
        raise BundleError(f"{path}: cannot read HDF5 file ({exc})") from exc
    return SPLITS if has_test else REQUIRED_SPLITS


def _read_captions(path, splits):
    keys = [f"{split}_{what}" for split in splits for what in ("captions", "image_idxs")]
    arrays = _read_h5_datasets(path, keys)
    for split in splits:
        captions, idxs = arrays[f"{split}_captions"], arrays[f"{split}_image_idxs"]
        _check_integer(path, f"{split}_captions", captions, 2)
        _check_integer(path, f"{split}_image_idxs", idxs, 1)
        if captions.shape[1] < 2:
            raise BundleError(f"{path}: {split}_captions has shape {captions.shape}; rows need <START> and a word")
        if idxs.shape[0] != captions.shape[0]:
            raise BundleError(
                f"{path}: {split}_image_idxs has {idxs.shape[0]} entries but {split}_captions has "
                f"{captions.shape[0]} rows"
            )
        arrays[f"{split}_captions"] = captions.astype(np.int32, copy=False)
        arrays[f"{split}_image_idxs"] = idxs.astype(np.int32, copy=False)
    return arrays


def _read_features(path):
    features = _read_h5_datasets(path, ["features"])["features"]
    if features.dtype.kind != "f":
        raise BundleError(f"{path}: dataset 'features' has dtype {features.dtype}, expected floating point")
    if features.ndim != 2:
        raise BundleError(f"{path}: dataset 'features' has shape {features.shape}, expected (num_images, D)")
    finite = np.isfinite(features)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise BundleError(
            f"{path}: dataset 'features' holds a non-finite value {features[row, col]} at [{row}, {col}]"
        )
    return features


def _read_vocab(path):
    _require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not a readable JSON vocabulary ({exc})") from exc
    if not isinstance(vocab, dict) or not {"idx_to_word", "word_to_idx"} <= set(vocab):
        raise BundleError(f"{path}: expected a JSON object with keys 'idx_to_word' and 'word_to_idx'")
    idx_to_word, word_to_idx = vocab["idx_to_word"], vocab["word_to_idx"]
    if not isinstance(idx_to_word, list) or not all(isinstance(w, str) for w in idx_to_word):
        raise BundleError(f"{path}: 'idx_to_word' must be a list of strings")
    if not isinstance(word_to_idx, dict) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in word_to_idx.values()
    ):
        raise BundleError(f"{path}: 'word_to_idx' must map words to integer ids")
    for word, idx in word_to_idx.items():
        if not 0 <= idx < len(idx_to_word) or idx_to_word[idx] != word:
            raise BundleError(
                f"{path}: 'word_to_idx' maps {word!r} to {idx}, but 'idx_to_word'[{idx}] is "
                f"{idx_to_word[idx] if 0 <= idx < len(idx_to_word) else 'out of range'!r}"
            )
    if len(word_to_idx) != len(idx_to_word):
        raise BundleError(
            f"{path}: 'idx_to_word' has {len(idx_to_word)} entries but 'word_to_idx' has {len(word_to_idx)}"
        )
    for token, idx in SPECIAL_TOKENS.items():
        if word_to_idx.get(token) != idx:
            raise BundleError(
                f"{path}: the vocabulary must map {token} to {idx}, found {word_to_idx.get(token, 'no entry')}"
            )
    return idx_to_word, word_to_idx


def _read_urls(path):
    _require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return np.asarray([line.strip() for line in f])
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read URL list ({exc})") from exc


def _check_consistency(data, paths, splits):
    vocab_size = len(data["idx_to_word"])
    for split in splits[1:]:
        train_width, width = data["train_features"].shape[1], data[f"{split}_features"].shape[1]
        if width != train_width:
            raise BundleError(
                f"{paths['train_features']} has features of width {train_width} but {paths[f'{split}_features']} "
                f"has width {width}"
            )
    for split in splits:
        captions = data[f"{split}_captions"]
        out_of_vocab = (captions < 0) | (captions >= vocab_size)
        if out_of_vocab.any():
            row, col = np.argwhere(out_of_vocab)[0]
            raise BundleError(
                f"{paths['captions']}: {split}_captions[{row}, {col}] = {captions[row, col]} is outside the "
                f"vocabulary of {vocab_size} words in {paths['vocab']}"
            )
        num_images = data[f"{split}_features"].shape[0]
        idxs = data[f"{split}_image_idxs"]
        bad = (idxs < 0) | (idxs >= num_images)
        if bad.any():
            row = int(np.argmax(bad))
            raise BundleError(
                f"{paths['captions']}: {split}_image_idxs[{row}] = {idxs[row]} is out of range for the "
                f"{num_images} images in {paths[f'{split}_features']}"
            )
        num_urls = data[f"{split}_urls"].shape[0]
        if num_urls != num_images:
            raise BundleError(
                f"{paths[f'{split}_urls']}: {num_urls} URLs for the {num_images} images in "
                f"{paths[f'{split}_features']}"
            )


def load_coco_data(base_dir=None, max_train=None, pca_features=True):
    """Load a captioning bundle into the assignment's dictionary.

    Keys: train_captions (N, T) int32, train_image_idxs (N,) int32, val_captions, val_image_idxs, train_features
    (num_train_images, D), val_features, idx_to_word (list), word_to_idx (dict), train_urls, val_urls (arrays of
    str), and the same test_* keys when the bundle has a test split. ``base_dir`` None means
    ``$CAPTIONKIT_DATA_DIR`` or, when unset, captionkit's built-in dataset. ``pca_features``: the bundle's
    PCA-reduced features, when it has them (see :func:`bundle_paths`).
    ``max_train`` keeps that many training captions drawn with replacement by ``np.random.randint``, as the
    assignment does (seed ``np.random`` for a reproducible subset). Raises :class:`BundleError` on bad data.
    """
    base = bundle_dir(base_dir)
    if not base.is_dir():
        raise BundleError(f"{base}: dataset directory not found")
    captions_path = bundle_paths(base, pca_features)["captions"]
    if not captions_path.is_file() and bundle_layout(base) == "captionkit":
        raise BundleError(f"{captions_path}: file not found, nor the CS231n assignment's coco2014_captions.h5: "
                          f"{base} is not a captioning bundle")
    splits = _captioned_splits(captions_path)
    paths = bundle_paths(base, pca_features, splits=splits)
    data = _read_captions(paths["captions"], splits)
    for split in splits:
        data[f"{split}_features"] = _read_features(paths[f"{split}_features"])
    data["idx_to_word"], data["word_to_idx"] = _read_vocab(paths["vocab"])
    for split in splits:
        data[f"{split}_urls"] = _read_urls(paths[f"{split}_urls"])
    _check_consistency(data, paths, splits)

    if max_train is not None:
        if not isinstance(max_train, (int, np.integer)) or max_train < 1:
            raise ValueError(f"max_train must be a positive integer or None, got {max_train!r}")
        mask = np.random.randint(data["train_captions"].shape[0], size=max_train)
        data["train_captions"] = data["train_captions"][mask]
        data["train_image_idxs"] = data["train_image_idxs"][mask]
    return data


def images_path(base_dir, split, layout=None):
    """Where a bundle keeps the pixels of ``split``, if it has them: ``{split}_images.h5`` (dataset ``images``).

    Not part of :func:`bundle_paths`: COCO bundles carry image URLs, not pixels; the built-in dataset adds them.
    """
    base = Path(base_dir)
    return base / _LAYOUTS[bundle_layout(base) if layout is None else layout]["images"].format(split=split)


def load_images(base_dir, split, indices):
    """Pixels of some images of ``split`` from ``{split}_images.h5`` (dataset ``images``, (num_images, H, W, 3)
    uint8), or None when the bundle has no such file (COCO bundles carry URLs, not pixels).

    ``indices``: image indices (any order). Returns (len(indices), H, W, 3) uint8; raises :class:`BundleError`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    base = bundle_dir(base_dir)
    path = images_path(base, split)
    if not path.is_file():
        return None
    import h5py

    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    try:
        with h5py.File(path, "r") as f:
            node = f.get("images")
            if not isinstance(node, h5py.Dataset):
                raise BundleError(f"{path}: missing dataset 'images' (found: {', '.join(sorted(f.keys()))})")
            if node.dtype != np.uint8 or node.ndim != 4 or node.shape[3] != 3:
                raise BundleError(
                    f"{path}: dataset 'images' has dtype {node.dtype} and shape {node.shape}, expected uint8 "
                    "(num_images, height, width, 3)"
                )
            bad = (indices < 0) | (indices >= node.shape[0])
            if bad.any():
                raise BundleError(f"{path}: image index {indices[bad][0]} is out of range for {node.shape[0]} images")
            order = np.unique(indices)  # h5py reads increasing indices only
            pixels = node[order]
    except BundleError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read HDF5 file ({exc})") from exc
    return pixels[np.searchsorted(order, indices)]


def sample_coco_minibatch(data, batch_size=100, split="train", rng=None):
    """Draw ``batch_size`` captions of ``split`` with replacement -> (captions (B, T), features (B, D), urls (B,)).

    ``rng`` (a ``np.random.RandomState``) defaults to the global ``np.random``, as in the assignment.
    """
    if f"{split}_captions" not in data:
        raise ValueError(f"split must be one of the data's splits "
                         f"({', '.join(s for s in SPLITS if f'{s}_captions' in data)}), got {split!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    split_size = data[f"{split}_captions"].shape[0]
    if split_size == 0:
        raise ValueError(f"the {split} split has no captions to sample from")
    rng = np.random if rng is None else rng
    mask = rng.choice(split_size, batch_size)
    captions = data[f"{split}_captions"][mask]
    image_idxs = data[f"{split}_image_idxs"][mask]
    return captions, data[f"{split}_features"][image_idxs], data[f"{split}_urls"][image_idxs]


def decode_captions(captions, idx_to_word):
    """Word ids to strings: (N, T) -> list of N strings, or (T,) -> one string.

    ``<NULL>`` is dropped and each caption stops after ``<END>``; ``<START>`` and ``<END>`` are kept, as in the
    assignment. ``idx_to_word`` is a list or a dict from id to word.
    """
    captions = np.asarray(captions)
    singleton = captions.ndim == 1
    if singleton:
        captions = captions[None]
    decoded = []
    for row in captions:
        words = []
        for idx in row:
            word = idx_to_word[int(idx)]
            if word != "<NULL>":
                words.append(word)
            if word == "<END>":
                break
        decoded.append(" ".join(words))
    return decoded[0] if singleton else decoded
