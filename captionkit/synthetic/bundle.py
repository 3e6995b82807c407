"""Writing the synthetic dataset as a captioning bundle, and the cached built-in copy `captionkit train` uses.

Files written (captionkit's bundle names, `captionkit.data`), plus the pixels and scene descriptions:

- ``captions.h5``: ``train_captions`` / ``val_captions`` (N, 17) int32, ``train_image_idxs`` / ``val_image_idxs``
  (N,) int32; five captions per image, in image order;
- ``vocab.json``: ``<NULL>``, ``<START>``, ``<END>``, ``<UNK>`` as ids 0-3, then the grammar's words sorted;
- ``{split}_features.h5``: ``features`` (num_images, 512) float32, from the ``shapes`` encoder; with ``grid=K``,
  (num_images, K*K, 512): one vector per cell of a K x K grid (the encoder's ``grid`` option), for attention;
- ``encoder.json``: the ``shapes`` encoder's record, so new pictures get the same features
  (`captionkit.encoders.pipeline`);
- ``{split}_urls.txt``: ``synthetic://{split}/000123``, one line per image;
- ``{split}_images.h5``: ``images`` (num_images, 64, 64, 3) uint8;
- ``synthetic_scenes.json``: generator version, seed and every scene's objects, for checking captions against them.

A directory appears only once complete (`captionkit.safeio.staged_directory`).
"""
import json
import os
from pathlib import Path

import numpy as np

from captionkit.bundle.layout import ENCODER_FILE, REQUIRED_SPLITS
from captionkit.bundle.writer import BundleFiles, encode_captions
from captionkit.checks import integer
from captionkit.encoders.record import EncoderRecord
from captionkit.encoders.registry import make_encoder
from captionkit.safeio import staged_directory
from captionkit.synthetic.generate import generate_split, image_digest
from captionkit.synthetic.grammar import MAX_WORDS, vocabulary
from captionkit.vocabulary import Vocabulary

# Bump when anything changes what a given seed generates: the cache folder name carries it, so old caches are ignored.
GENERATOR_VERSION = 4
DEFAULT_SEED = 231
DEFAULT_NUM_TRAIN = 8000
DEFAULT_NUM_VAL = 1000
CACHE_DIR_ENV = "CAPTIONKIT_CACHE_DIR"
SCENES_FILE = "synthetic_scenes.json"
FEATURE_BATCH = 1000  # images per progress report while computing features


def build_vocabulary():
    """(idx_to_word, word_to_idx): the special tokens as ids 0-3, then every grammar word in sorted order."""
    words = Vocabulary.with_words(vocabulary())
    return words.idx_to_word, words.word_to_idx


def _check_arguments(seed, num_train, num_val):
    for name, value, minimum in (("seed", seed, 0), ("num_train", num_train, 1), ("num_val", num_val, 1)):
        integer(name, value, minimum)


def _features_encoder(grid):
    """The ``shapes`` encoder, on a ``grid`` x ``grid`` grid of regions unless ``grid`` is None."""
    if grid is None:
        return make_encoder("shapes")
    return make_encoder("shapes", {"grid": str(integer("grid", grid, 1))})


def _write_files(directory, seed, num_train, num_val, progress, encoder):
    """Generate both splits and write every bundle file into the existing, empty directory."""
    train_rng, val_rng = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(2))
    train = generate_split(train_rng, num_train, "train", progress=progress)
    val = generate_split(val_rng, num_val, "val", exclude={image_digest(image) for image in train.images},
                         progress=progress)
    splits = {"train": train, "val": val}
    idx_to_word, word_to_idx = build_vocabulary()
    files = BundleFiles(directory, REQUIRED_SPLITS)
    files.write_captions({name: encode_captions(split.captions, word_to_idx, MAX_WORDS)
                          for name, split in splits.items()})
    files.write_vocabulary(idx_to_word)

    total_images, done = num_train + num_val, 0
    for name, split in splits.items():
        features = np.empty((len(split.images), *encoder.output_shape), dtype=np.float32)
        for start in range(0, len(split.images), FEATURE_BATCH):
            batch = split.images[start:start + FEATURE_BATCH]
            features[start:start + len(batch)] = encoder.encode(batch)
            done += len(batch)
            if progress is not None:
                progress("computing features", done, total_images)
        files.write_features(name, features)
        files.write_images(name, split.images)
        files.write_urls(name, [f"synthetic://{name}/{i:06d}" for i in range(len(split.images))])
    EncoderRecord.of(encoder).save(Path(directory) / ENCODER_FILE)

    scenes = {"generator": "captionkit.synthetic", "version": GENERATOR_VERSION, "seed": seed}
    scenes.update({name: [scene.to_dict() for scene in splits[name].scenes] for name in REQUIRED_SPLITS})
    (Path(directory) / SCENES_FILE).write_text(json.dumps(scenes))


def write_bundle(directory, seed=DEFAULT_SEED, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL, progress=None,
                 grid=None):
    """Generate the synthetic dataset and write it as a bundle into directory (must not exist, or be empty).

    Deterministic: the same (seed, num_train, num_val, grid) give byte-identical files. The directory appears, by
    one rename, only once every file is written. progress: optional callable(stage, done, total). grid: K for
    features on a K x K grid of regions (num_images, K*K, 512), recorded in ``encoder.json``; None for one vector
    an image. Returns the directory as a Path; raises FileExistsError if it holds anything, ValueError on bad
    arguments.
    """
    _check_arguments(seed, num_train, num_val)
    encoder = _features_encoder(grid)  # a bad grid is refused before anything is drawn
    directory = Path(directory)
    with staged_directory(directory) as staging:
        _write_files(staging, int(seed), int(num_train), int(num_val), progress, encoder)
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
