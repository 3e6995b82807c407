"""Writing captioning bundles (the layout :mod:`captionkit.bundle.reader` reads, under captionkit's file names).

Used by the built-in dataset (:mod:`captionkit.synthetic.bundle`) and by ``captionkit data import``
(:mod:`captionkit.importing`). A bundle appears only once complete: :func:`captionkit.safeio.staged_directory`
gives a temporary sibling folder to write into and renames it into place at the end, so a failure or a kill leaves
no half-written bundle behind.
"""
from pathlib import Path

import h5py
import numpy as np

from captionkit.bundle.layout import LAYOUTS, bundle_paths, images_path
from captionkit.vocabulary import END, NULL, SPECIAL_TOKENS, START, UNK, Vocabulary

__all__ = ["BundleFiles", "encode_captions", "vocabulary_file_content"]


def encode_captions(captions_per_image, word_to_idx, max_words):
    """Word-list captions per image -> (captions (N, max_words + 2) int32, image_idxs (N,) int32), COCO style.

    Each row is ``<START>`` w1..wk ``<END>`` then ``<NULL>`` padding, k at most ``max_words`` (longer captions are
    cut); words not in ``word_to_idx`` become ``<UNK>``; rows follow image order.
    """
    width = max_words + 2
    unknown = SPECIAL_TOKENS[UNK]
    rows, image_idxs = [], []
    for image_idx, captions in enumerate(captions_per_image):
        for caption in captions:
            ids = [SPECIAL_TOKENS[START], *(word_to_idx.get(word, unknown) for word in caption[:max_words]),
                   SPECIAL_TOKENS[END]]
            rows.append(ids + [SPECIAL_TOKENS[NULL]] * (width - len(ids)))
            image_idxs.append(image_idx)
    return np.array(rows, dtype=np.int32).reshape(-1, width), np.array(image_idxs, dtype=np.int32)


def vocabulary_file_content(idx_to_word):
    """``vocab.json``'s text for ``idx_to_word`` (which starts with the special tokens in their order and lists
    every word once: the check the reader applies, so no bundle is written that it would then refuse)."""
    return Vocabulary(idx_to_word, source="vocabulary being written").document()


class BundleFiles:
    """The files of a bundle being written into ``directory`` (a staging folder), under captionkit's names."""

    def __init__(self, directory, splits):
        self.directory = Path(directory)
        self.splits = tuple(splits)
        self.full = bundle_paths(self.directory, pca_features=False, layout="captionkit", splits=self.splits)
        self.reduced = {split: self.directory / LAYOUTS["captionkit"]["features_pca"].format(split=split)
                        for split in self.splits}

    @staticmethod
    def write_array(path, name, array, compress=False):
        # No timestamps and fixed chunking, so the same arrays always give the same bytes.
        options = {"compression": "gzip", "compression_opts": 4, "chunks": (min(len(array), 256),) + array.shape[1:]}
        with h5py.File(path, "w") as f:
            f.create_dataset(name, data=array, track_times=False, **(options if compress and len(array) else {}))

    def write_captions(self, encoded):
        """``encoded``: {split: (captions (N, T), image_idxs (N,))} for every split of the bundle."""
        with h5py.File(self.full["captions"], "w") as f:
            for split in self.splits:
                captions, image_idxs = encoded[split]
                f.create_dataset(f"{split}_captions", data=captions, track_times=False)
                f.create_dataset(f"{split}_image_idxs", data=image_idxs, track_times=False)

    def write_vocabulary(self, idx_to_word):
        self.full["vocab"].write_text(vocabulary_file_content(idx_to_word), encoding="utf-8")

    def write_features(self, split, features, reduced=False):
        path = self.reduced[split] if reduced else self.full[f"{split}_features"]
        self.write_array(path, "features", np.asarray(features, dtype=np.float32))

    def write_urls(self, split, urls):
        for url in urls:
            if "\n" in url or "\r" in url:
                raise ValueError(f"an image's name or path holds a line break: {url!r}")
        self.full[f"{split}_urls"].write_text("".join(f"{url}\n" for url in urls), encoding="utf-8")

    def write_images(self, split, images):
        self.write_array(images_path(self.directory, split, layout="captionkit"), "images", images, compress=True)
