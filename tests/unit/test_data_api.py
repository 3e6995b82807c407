"""Reading the COCO captioning bundle: the assignment's dictionary, and one clear error per kind of bad data."""

import numpy as np
import pytest

from bundle_damage import BAD_BUNDLES, corrupt
from captionkit.data import BundleError, check_bundle, decode_captions, load_coco_data, sample_coco_minibatch
from conftest import write_bundle


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


@pytest.mark.parametrize("kind", BAD_BUNDLES)
def test_bad_bundle_gives_one_clear_error(kind, bundle_dir):
    pattern = corrupt(kind, bundle_dir)
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
