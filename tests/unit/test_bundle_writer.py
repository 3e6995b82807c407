"""captionkit.bundle.writer: captions encoded COCO style, the vocabulary file, and a bundle's files under
captionkit's names, which the bundle reader then loads.

Oracles: rows written out by hand, the reader (captionkit.data.load_coco_data, a module of its own) on what was
written, and the bytes of two writes of the same arrays.
"""
import json

import h5py
import numpy as np
import pytest

from captionkit.bundle.layout import LAYOUTS
from captionkit.bundle.writer import BundleFiles, encode_captions, vocabulary_file_content
from captionkit.data import load_coco_data

WORDS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat", "sits"]
WORD_TO_IDX = {w: i for i, w in enumerate(WORDS)}


def test_captions_are_start_words_end_then_padding_and_unknown_words_are_unk():
    captions, image_idxs = encode_captions([[["a", "cat"], ["a", "dog", "sits", "here", "now"]], [], [["cat"]]],
                                           WORD_TO_IDX, max_words=3)
    assert captions.dtype == np.int32 and image_idxs.dtype == np.int32
    assert captions.tolist() == [[1, 4, 5, 2, 0], [1, 4, 3, 6, 2], [1, 5, 2, 0, 0]]  # cut at 3 words; dog -> <UNK>
    assert image_idxs.tolist() == [0, 0, 2]  # image 1 has no caption
    empty, idxs = encode_captions([], WORD_TO_IDX, max_words=4)
    assert empty.shape == (0, 6) and idxs.shape == (0,)


def test_the_vocabulary_file_is_both_directions_and_refuses_what_the_reader_would():
    document = json.loads(vocabulary_file_content(WORDS))
    assert document["idx_to_word"] == WORDS and document["word_to_idx"] == WORD_TO_IDX
    with pytest.raises(ValueError, match=r"^vocabulary being written: the vocabulary must map <NULL> to 0, found 1"):
        vocabulary_file_content(["<START>", "<NULL>", "<END>", "<UNK>", "a"])
    with pytest.raises(ValueError, match=r"^vocabulary being written: 'idx_to_word' lists 'a' twice, at 4 and 7$"):
        vocabulary_file_content(WORDS + ["a"])


def write_complete_bundle(directory, reduced=False):
    files = BundleFiles(directory, ("train", "val"))
    rng = np.random.default_rng(0)
    per_split = {"train": [[["a", "cat"]], [["cat", "sits"]], [["a"]]], "val": [[["sits"]], [["a", "cat", "sits"]]]}
    files.write_captions({split: encode_captions(c, WORD_TO_IDX, max_words=4) for split, c in per_split.items()})
    files.write_vocabulary(WORDS)
    features = {split: rng.standard_normal((len(c), 5)) for split, c in per_split.items()}
    for split, captions in per_split.items():
        files.write_features(split, features[split])
        if reduced:
            files.write_features(split, features[split][:, :2], reduced=True)
        files.write_urls(split, [f"pictures/{split}-{i}.jpg" for i in range(len(captions))])
    return files, features


def test_a_written_bundle_loads_with_captionkits_names(tmp_path):
    files, features = write_complete_bundle(tmp_path)
    names = LAYOUTS["captionkit"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["captions"], names["vocab"]] + [names[role].format(split=split) for split in ("train", "val")
                                               for role in ("features", "urls")])
    data = load_coco_data(tmp_path)
    assert data["idx_to_word"] == WORDS
    np.testing.assert_array_equal(data["train_features"], features["train"].astype(np.float32))
    assert data["train_captions"][:, :4].tolist() == [[1, 4, 5, 2], [1, 5, 6, 2], [1, 4, 2, 0]]
    assert data["val_image_idxs"].tolist() == [0, 1] and list(data["val_urls"]) == ["pictures/val-0.jpg",
                                                                                   "pictures/val-1.jpg"]


def test_reduced_features_are_the_ones_loaded_when_present(tmp_path):
    _, features = write_complete_bundle(tmp_path, reduced=True)
    data = load_coco_data(tmp_path)
    np.testing.assert_array_equal(data["val_features"], features["val"][:, :2].astype(np.float32))
    assert load_coco_data(tmp_path, pca_features=False)["val_features"].shape == (2, 5)


def test_images_are_compressed_and_the_same_arrays_give_the_same_bytes(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(3, 8, 8, 3)).astype(np.uint8)
    for name in ("one", "two"):  # BundleFiles writes into a folder that exists (a staging folder)
        (tmp_path / name).mkdir()
        BundleFiles(tmp_path / name, ("train",)).write_images("train", images)
    first, second = (tmp_path / n / LAYOUTS["captionkit"]["images"].format(split="train") for n in ("one", "two"))
    assert first.read_bytes() == second.read_bytes()
    with h5py.File(first) as f:
        assert f["images"].compression == "gzip"
        np.testing.assert_array_equal(f["images"][()], images)


def test_a_line_break_in_a_url_is_refused_before_writing(tmp_path):
    files = BundleFiles(tmp_path, ("train",))
    with pytest.raises(ValueError, match=r"an image's name or path holds a line break: 'a\\nb.jpg'"):
        files.write_urls("train", ["ok.jpg", "a\nb.jpg"])
    assert not files.full["train_urls"].exists()
