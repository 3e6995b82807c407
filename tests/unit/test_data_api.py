"""Reading the COCO captioning bundle: the assignment's dictionary, and one clear error per kind of bad data."""
import json

import h5py
import numpy as np
import pytest

from captionkit.data import BundleError, check_bundle, decode_captions, load_coco_data, sample_coco_minibatch
from conftest import real_vocab, write_bundle


def test_load_returns_the_assignment_dictionary(bundle_dir):
    data = load_coco_data(bundle_dir)
    assert data["train_captions"].shape == (80, 17) and data["train_captions"].dtype == np.int32
    assert data["train_image_idxs"].shape == (80,) and data["train_image_idxs"].dtype == np.int32
    assert data["val_captions"].shape == (24, 17)
    assert data["train_features"].shape == (40, 512) and data["train_features"].dtype == np.float32
    assert data["val_features"].shape == (12, 512)
    assert len(data["idx_to_word"]) == len(data["word_to_idx"]) == 1004
    assert data["train_urls"].shape == (40,) and data["train_urls"][3] == "http://example.org/train/3.jpg"


def test_non_pca_features(tmp_path):
    write_bundle(tmp_path, feature_dim=64, pca=False)
    assert load_coco_data(tmp_path, pca_features=False)["train_features"].shape == (40, 64)
    with pytest.raises(BundleError, match=r"train2014_vgg16_fc7_pca\.h5: file not found"):
        load_coco_data(tmp_path)


def test_max_train_subsamples_with_numpy_random(bundle_dir):
    np.random.seed(231)
    data = load_coco_data(bundle_dir, max_train=50)
    full = load_coco_data(bundle_dir)
    np.random.seed(231)
    mask = np.random.randint(80, size=50)
    np.testing.assert_array_equal(data["train_captions"], full["train_captions"][mask])
    np.testing.assert_array_equal(data["train_image_idxs"], full["train_image_idxs"][mask])


def test_sample_minibatch_pairs_captions_with_their_images(bundle_dir):
    data = load_coco_data(bundle_dir)
    captions, features, urls = sample_coco_minibatch(data, batch_size=7, split="val",
                                                     rng=np.random.RandomState(0))
    mask = np.random.RandomState(0).choice(24, 7)
    np.testing.assert_array_equal(captions, data["val_captions"][mask])
    np.testing.assert_array_equal(features, data["val_features"][data["val_image_idxs"][mask]])
    assert list(urls) == list(data["val_urls"][data["val_image_idxs"][mask]])
    with pytest.raises(ValueError, match="split"):
        sample_coco_minibatch(data, split="test")


def test_decode_captions():
    idx_to_word = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat"]
    assert decode_captions(np.array([1, 4, 5, 2, 4, 0]), idx_to_word) == "<START> a cat <END>"
    assert decode_captions(np.array([[4, 0, 5], [5, 2, 5]]), dict(enumerate(idx_to_word))) == ["a cat", "cat <END>"]


def _rewrite_h5(path, key, value):
    with h5py.File(path, "a") as f:
        del f[key]
        f[key] = value


def _corrupt(kind, root):
    """Apply one kind of damage to the bundle at ``root``; returns the regex the error must match."""
    caps, vocab_path = root / "coco2014_captions.h5", root / "coco2014_vocab.json"
    train_feats = root / "train2014_vgg16_fc7_pca.h5"
    if kind == "missing file":
        (root / "val2014_urls.txt").unlink()
        return r"val2014_urls\.txt: file not found"
    if kind == "missing key":
        with h5py.File(caps, "a") as f:
            del f["val_image_idxs"]
        return r"coco2014_captions\.h5: missing dataset 'val_image_idxs'"
    if kind == "float captions":
        _rewrite_h5(caps, "train_captions", np.ones((80, 17), dtype=np.float32))
        return r"coco2014_captions\.h5: dataset 'train_captions' has dtype float32, expected integers"
    if kind == "captions wrong rank":
        _rewrite_h5(caps, "train_captions", np.ones(80, dtype=np.int32))
        return r"'train_captions' has shape \(80,\), expected 2 dimensions"
    if kind == "index length mismatch":
        _rewrite_h5(caps, "val_image_idxs", np.zeros(5, dtype=np.int32))
        return r"val_image_idxs has 5 entries but val_captions has 24 rows"
    if kind == "word id out of vocabulary":
        with h5py.File(caps, "a") as f:
            f["train_captions"][3, 4] = 5000
        return r"train_captions\[3, 4\] = 5000 is outside the vocabulary of 1004 words"
    if kind == "image index out of range":
        with h5py.File(caps, "a") as f:
            f["val_image_idxs"][6] = 99
        return r"val_image_idxs\[6\] = 99 is out of range for the 12 images in .*val2014_vgg16_fc7_pca\.h5"
    if kind == "nan feature":
        with h5py.File(train_feats, "a") as f:
            f["features"][2, 7] = np.nan
        return r"train2014_vgg16_fc7_pca\.h5: dataset 'features' holds a non-finite value nan at \[2, 7\]"
    if kind == "inf feature":
        with h5py.File(train_feats, "a") as f:
            f["features"][0, 0] = np.inf
        return r"non-finite value inf at \[0, 0\]"
    if kind == "integer features":
        _rewrite_h5(train_feats, "features", np.ones((40, 512), dtype=np.int64))
        return r"'features' has dtype int64, expected floating point"
    if kind == "truncated hdf5":
        data = train_feats.read_bytes()
        train_feats.write_bytes(data[: len(data) // 3])
        return r"train2014_vgg16_fc7_pca\.h5: cannot read HDF5 file"
    if kind == "not hdf5":
        caps.write_bytes(b"this is not an HDF5 file at all")
        return r"coco2014_captions\.h5: cannot read HDF5 file"
    if kind == "malformed json":
        vocab_path.write_text('{"idx_to_word": [')
        return r"coco2014_vocab\.json: not a readable JSON vocabulary"
    if kind == "vocab without <END>":
        vocab = real_vocab()
        vocab["idx_to_word"][2] = "<FIN>"
        vocab["word_to_idx"]["<FIN>"] = vocab["word_to_idx"].pop("<END>")
        vocab_path.write_text(json.dumps(vocab))
        return r"coco2014_vocab\.json: the vocabulary must map <END> to 2, found no entry"
    if kind == "inconsistent vocab":
        vocab = real_vocab()
        vocab["word_to_idx"]["cat"] = 4
        vocab_path.write_text(json.dumps(vocab))
        return r"maps 'cat' to 4, but 'idx_to_word'\[4\] is 'a'"
    if kind == "feature widths differ":
        _rewrite_h5(root / "val2014_vgg16_fc7_pca.h5", "features", np.ones((12, 256), dtype=np.float32))
        return r"has features of width 512 but .*val2014_vgg16_fc7_pca\.h5 has width 256"
    if kind == "url count":
        (root / "train2014_urls.txt").write_text("http://example.org/only-one.jpg\n")
        return r"train2014_urls\.txt: 1 URLs for the 40 images"
    raise AssertionError(kind)


BAD_BUNDLES = [
    "missing file", "missing key", "float captions", "captions wrong rank", "index length mismatch",
    "word id out of vocabulary", "image index out of range", "nan feature", "inf feature", "integer features",
    "truncated hdf5", "not hdf5", "malformed json", "vocab without <END>", "inconsistent vocab",
    "feature widths differ", "url count",
]


@pytest.mark.parametrize("kind", BAD_BUNDLES)
def test_bad_bundle_gives_one_clear_error(kind, bundle_dir):
    pattern = _corrupt(kind, bundle_dir)
    with pytest.raises(BundleError, match=pattern):
        load_coco_data(bundle_dir)
    with pytest.raises(BundleError, match=pattern):  # the downloader's check refuses what the loader refuses
        check_bundle(bundle_dir)


def test_check_bundle_accepts_what_the_loader_reads(bundle_dir):
    assert check_bundle(bundle_dir) is None
    assert load_coco_data(bundle_dir)["train_features"].shape == (40, 512)


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="dataset directory not found"):
        load_coco_data(tmp_path / "nowhere")


def test_image_from_url_reads_builtin_pixels_and_tolerates_dead_urls(tmp_path):
    from captionkit.data import load_images
    from captionkit.images import image_from_url
    from captionkit.synthetic import write_bundle as write_synthetic

    bundle = write_synthetic(tmp_path / "synth", num_train=20, num_val=6)
    np.testing.assert_array_equal(image_from_url("synthetic://val/000004", base_dir=bundle),
                                  load_images(bundle, "val", [4])[0])
    with pytest.warns(UserWarning, match="could not fetch image"):
        assert image_from_url("http://127.0.0.1:9/nothing.jpg", timeout=2) is None
