"""Shared fixtures: small datasets written in the COCO captioning bundle layout."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

DATA_DIR = Path(__file__).parent / "data"


def real_vocab():
    """The assignment's real 1004-word vocabulary (tests/data/coco2014_vocab.json)."""
    with open(DATA_DIR / "coco2014_vocab.json", encoding="utf-8") as f:
        return json.load(f)


def make_captions(rng, num, vocab_size, max_len=17):
    """Caption rows shaped like COCO's: <START>, 8 to 14 words (Zipf-like over the frequency-sorted vocabulary,
    as real captions are), <END>, <NULL> padding."""
    captions = np.zeros((num, max_len), dtype=np.int32)
    ranks = np.arange(1, vocab_size - 3)
    probs = 1.0 / ranks
    probs /= probs.sum()
    for i in range(num):
        length = rng.randint(8, 15)
        captions[i, 0] = 1
        captions[i, 1 : length + 1] = 4 + rng.choice(len(ranks), size=length, p=probs)
        captions[i, length + 1] = 2
    return captions


def write_bundle(directory, num_train_images=40, num_val_images=12, captions_per_image=2, feature_dim=512, seed=0,
                 vocab=None, pca=True):
    """Write a small, valid bundle to ``directory`` and return its path.

    Features are Gaussian (one row per image); captions come from :func:`make_captions`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    vocab = real_vocab() if vocab is None else vocab
    V = len(vocab["idx_to_word"])
    suffix = "_pca" if pca else ""
    with h5py.File(directory / "coco2014_captions.h5", "w") as f:
        for split, num_images in (("train", num_train_images), ("val", num_val_images)):
            f[f"{split}_captions"] = make_captions(rng, num_images * captions_per_image, V)
            f[f"{split}_image_idxs"] = np.repeat(np.arange(num_images, dtype=np.int32), captions_per_image)
    for split, num_images in (("train", num_train_images), ("val", num_val_images)):
        with h5py.File(directory / f"{split}2014_vgg16_fc7{suffix}.h5", "w") as f:
            f["features"] = rng.randn(num_images, feature_dim).astype(np.float32)
        with open(directory / f"{split}2014_urls.txt", "w", encoding="utf-8") as f:
            f.writelines(f"http://example.org/{split}/{i}.jpg\n" for i in range(num_images))
    with open(directory / "coco2014_vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    return directory


@pytest.fixture
def bundle_dir(tmp_path):
    """A small valid bundle with the real vocabulary."""
    return write_bundle(tmp_path / "bundle")
