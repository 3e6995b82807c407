"""Writing the synthetic dataset as a COCO captioning bundle, and the cached built-in copy `captionkit train` uses.

Files written (names from `captionkit.data.bundle_paths`, plus the pixels and scene descriptions):

- ``coco2014_captions.h5``: ``train_captions`` / ``val_captions`` (N, 17) int32, ``train_image_idxs`` /
  ``val_image_idxs`` (N,) int32; five captions per image, in image order;
- ``coco2014_vocab.json``: ``<NULL>``, ``<START>``, ``<END>``, ``<UNK>`` as ids 0-3, then the grammar's words sorted;
- ``{split}2014_vgg16_fc7_pca.h5``: ``features`` (num_images, 512) float32, `features.extract_features`;
- ``{split}2014_vgg16_fc7.h5``: ``features`` (num_images, 1424) float32, the raw descriptor the 512-d one pools;
- ``{split}2014_urls.txt``: ``synthetic://{split}/000123``, one line per image;
- ``{split}2014_images.h5``: ``images`` (num_images, 64, 64, 3) uint8;
- ``synthetic_scenes.json``: generator version, seed and every scene's objects, for checking captions against them.

A directory appears only once complete: files are written into a temporary sibling that is then renamed.
"""
import errno
import json
import os
import secrets
import shutil
from pathlib import Path

import h5py
import numpy as np

from captionkit.data import SPECIAL_TOKENS, SPLITS, bundle_paths, images_path
from captionkit.synthetic.features import RAW_DIM, describe, pool
from captionkit.synthetic.generate import generate_split, image_digest
from captionkit.synthetic.grammar import MAX_WORDS, vocabulary

# Bump when anything changes what a given seed generates: the cache folder name carries it, so old caches are ignored.
GENERATOR_VERSION = 3
DEFAULT_SEED = 231
DEFAULT_NUM_TRAIN = 8000
DEFAULT_NUM_VAL = 1000
CAPTION_LENGTH = MAX_WORDS + 2  # <START> + words + <END>
CACHE_DIR_ENV = "CAPTIONKIT_CACHE_DIR"
SCENES_FILE = "synthetic_scenes.json"
FEATURE_BATCH = 1000  # images per progress report while computing features


def build_vocabulary():
    """(idx_to_word, word_to_idx): the special tokens as ids 0-3, then every grammar word in sorted order."""
    idx_to_word = sorted(SPECIAL_TOKENS, key=SPECIAL_TOKENS.get) + vocabulary()
    return idx_to_word, {word: idx for idx, word in enumerate(idx_to_word)}


def encode_captions(captions_per_image, word_to_idx):
    """Word-tuple captions per image -> (captions (N, 17) int32, image_idxs (N,) int32), COCO style.

    Each row is <START> w1..wk <END> then <NULL> padding; rows follow image order.
    """
    rows, image_idxs = [], []
    for image_idx, captions in enumerate(captions_per_image):
        for caption in captions:
            if len(caption) > MAX_WORDS:
                raise ValueError(f"caption of image {image_idx} has {len(caption)} words, at most {MAX_WORDS} fit")
            ids = [SPECIAL_TOKENS["<START>"], *(word_to_idx[word] for word in caption), SPECIAL_TOKENS["<END>"]]
            rows.append(ids + [SPECIAL_TOKENS["<NULL>"]] * (CAPTION_LENGTH - len(ids)))
            image_idxs.append(image_idx)
    return np.array(rows, dtype=np.int32).reshape(-1, CAPTION_LENGTH), np.array(image_idxs, dtype=np.int32)


def _check_arguments(seed, num_train, num_val):
    for name, value, minimum in (("seed", seed, 0), ("num_train", num_train, 1), ("num_val", num_val, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _write_h5(path, name, array, compress=False):
    # No timestamps and fixed chunking, so the same arrays always give the same bytes.
    options = {"compression": "gzip", "compression_opts": 4, "chunks": (min(len(array), 256),) + array.shape[1:]}
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=array, track_times=False, **(options if compress else {}))


def _write_files(directory, seed, num_train, num_val, progress):
    """Generate both splits and write every bundle file into the existing, empty directory."""
    train_rng, val_rng = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(2))
    train = generate_split(train_rng, num_train, "train", progress=progress)
    val = generate_split(val_rng, num_val, "val", exclude={image_digest(image) for image in train.images},
                         progress=progress)
    splits = {"train": train, "val": val}
    idx_to_word, word_to_idx = build_vocabulary()
    pca_paths, raw_paths = bundle_paths(directory, pca_features=True), bundle_paths(directory, pca_features=False)

    with h5py.File(pca_paths["captions"], "w") as f:
        for name, split in splits.items():
            captions, image_idxs = encode_captions(split.captions, word_to_idx)
            f.create_dataset(f"{name}_captions", data=captions, track_times=False)
            f.create_dataset(f"{name}_image_idxs", data=image_idxs, track_times=False)
    pca_paths["vocab"].write_text(json.dumps({"idx_to_word": idx_to_word, "word_to_idx": word_to_idx}))

    total_images, done = num_train + num_val, 0
    for name, split in splits.items():
        raw = np.empty((len(split.images), RAW_DIM), dtype=np.float32)
        for start in range(0, len(split.images), FEATURE_BATCH):
            batch = split.images[start:start + FEATURE_BATCH]
            raw[start:start + len(batch)] = describe(batch)
            done += len(batch)
            if progress is not None:
                progress("computing features", done, total_images)
        _write_h5(raw_paths[f"{name}_features"], "features", raw)
        _write_h5(pca_paths[f"{name}_features"], "features", pool(raw))
        _write_h5(images_path(directory, name), "images", split.images, compress=True)
        urls = "".join(f"synthetic://{name}/{i:06d}\n" for i in range(len(split.images)))
        pca_paths[f"{name}_urls"].write_text(urls)

    scenes = {"generator": "captionkit.synthetic", "version": GENERATOR_VERSION, "seed": seed}
    scenes.update({name: [scene.to_dict() for scene in splits[name].scenes] for name in SPLITS})
    (Path(directory) / SCENES_FILE).write_text(json.dumps(scenes))


def _is_empty_or_missing(directory):
    return not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))


def write_bundle(directory, seed=DEFAULT_SEED, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL, progress=None):
    """Generate the synthetic dataset and write it as a bundle into directory (must not exist, or be empty).

    Deterministic: the same (seed, num_train, num_val) give byte-identical files. The directory appears, by one
    rename, only once every file is written. progress: optional callable(stage, done, total).
    Returns the directory as a Path; raises FileExistsError if it holds anything, ValueError on bad arguments.
    """
    _check_arguments(seed, num_train, num_val)
    directory = Path(directory)
    if not _is_empty_or_missing(directory):
        raise FileExistsError(f"{directory}: already exists and is not an empty directory; choose a new one")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    try:
        _write_files(staging, int(seed), int(num_train), int(num_val), progress)
        try:
            os.rename(staging, directory)  # replaces an empty directory; fails if anything appeared there meanwhile
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise FileExistsError(f"{directory}: appeared while the bundle was being written") from exc
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def cache_root():
    """``$CAPTIONKIT_CACHE_DIR`` if set, else ``~/.cache/captionkit``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "captionkit"


def builtin_dataset_dir(seed=DEFAULT_SEED, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL, progress=None):
    """The cached built-in dataset's directory, generating it on first use (a few seconds).

    Lives in `cache_root()` under a name carrying the generator version, seed and sizes, so a format change
    regenerates. Safe under concurrent first use: each process writes a private copy and renames it into place; a
    process that loses the race discards its copy and uses the winner's.
    """
    _check_arguments(seed, num_train, num_val)
    directory = cache_root() / f"synthetic-v{GENERATOR_VERSION}-seed{seed}-train{num_train}-val{num_val}"
    if directory.is_dir():
        return directory
    try:
        write_bundle(directory, seed=seed, num_train=num_train, num_val=num_val, progress=progress)
    except FileExistsError:
        if not directory.is_dir():
            raise
    return directory
