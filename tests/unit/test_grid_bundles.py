"""Bundles of feature grids (N, L, D): the writer's grids read back equal, bad grid shapes refused naming the file
and the key, the encoder record's ``regions``, and a PCA applied to each region's vector.

Oracles: the arrays written here (read back with h5py where the writer is under test), and numpy's own reshaping
for the PCA of grids.
"""
import json

import h5py
import numpy as np
import pytest

from captionkit.bundle.reader import BundleError, feature_shape, load_coco_data, sample_coco_minibatch
from captionkit.bundle.writer import BundleFiles, encode_captions
from captionkit.encoders import EncoderError, make_encoder
from captionkit.encoders.pipeline import FeaturePipeline, Pca
from captionkit.encoders.record import EncoderRecord

WORDS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "red", "square"]
SIZES = {"train": 6, "val": 3}


def write_grid_bundle(directory, shapes=None, seed=0):
    """A bundle written by captionkit's writer with features ``shapes[split]`` per split (default (n, 4, 5)):
    returns {split: features written}."""
    rng = np.random.default_rng(seed)
    directory.mkdir()
    files = BundleFiles(directory, tuple(SIZES))
    word_to_idx = {word: idx for idx, word in enumerate(WORDS)}
    files.write_vocabulary(WORDS)
    files.write_captions({split: encode_captions([[["a", "red", "square"]]] * n, word_to_idx, 5)
                          for split, n in SIZES.items()})
    written = {}
    for split, count in SIZES.items():
        shape = (shapes or {}).get(split, (count, 4, 5))
        written[split] = rng.standard_normal(shape).astype(np.float32)
        files.write_features(split, written[split])
        files.write_urls(split, [f"pic/{split}/{i}.png" for i in range(shape[0])])
    return written


def overwrite_features(path, array):
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=array)


def test_grid_features_round_trip_through_writer_and_reader(tmp_path):
    written = write_grid_bundle(tmp_path / "b")
    data = load_coco_data(tmp_path / "b")
    for split in SIZES:
        assert data[f"{split}_features"].shape == (SIZES[split], 4, 5)
        np.testing.assert_array_equal(data[f"{split}_features"], written[split])
    assert feature_shape(tmp_path / "b") == (4, 5)
    captions, features, _ = sample_coco_minibatch(data, batch_size=7, rng=np.random.RandomState(0))
    assert features.shape == (7, 4, 5)
    rows = np.random.RandomState(0).choice(len(data["train_captions"]), 7)
    np.testing.assert_array_equal(features, written["train"][data["train_image_idxs"][rows]])


def test_vector_bundles_keep_their_shape(tmp_path):
    written = write_grid_bundle(tmp_path / "b", {"train": (6, 5), "val": (3, 5)})
    assert feature_shape(tmp_path / "b") == (5,)
    np.testing.assert_array_equal(load_coco_data(tmp_path / "b")["val_features"], written["val"])


@pytest.mark.parametrize("val_shape, message", [
    ((3, 9, 5), r"train_features\.h5: dataset 'features' holds a grid of 4 regions x 5 values per image but "
                r".*val_features\.h5's holds a grid of 9 regions x 5 values"),
    ((3, 4, 6), r"train_features\.h5: dataset 'features' holds a grid of 4 regions x 5 values per image but "
                r".*val_features\.h5's holds a grid of 4 regions x 6 values"),
    ((3, 20), r"train_features\.h5: dataset 'features' holds a grid of 4 regions x 5 values per image but "
              r".*val_features\.h5's holds 20 values"),
])
def test_grids_differing_between_splits_are_refused(tmp_path, val_shape, message):
    write_grid_bundle(tmp_path / "b", {"val": val_shape})
    with pytest.raises(BundleError, match=message):
        load_coco_data(tmp_path / "b")


@pytest.mark.parametrize("shape, message", [
    ((6, 2, 2, 5), r"train_features\.h5: dataset 'features' has shape \(6, 2, 2, 5\), expected \(num_images, D\) "
                   r"vectors or \(num_images, L, D\) grids"),
    ((6, 0, 5), r"train_features\.h5: dataset 'features' has shape \(6, 0, 5\): a grid needs at least one region"),
    ((6, 4, 0), r"train_features\.h5: dataset 'features' has shape \(6, 4, 0\): a grid needs at least one region"),
])
def test_bad_grid_shapes_are_refused_naming_file_and_key(tmp_path, shape, message):
    write_grid_bundle(tmp_path / "b")
    overwrite_features(tmp_path / "b" / "train_features.h5", np.zeros(shape, np.float32))
    with pytest.raises(BundleError, match=message):
        load_coco_data(tmp_path / "b")
    with pytest.raises(BundleError, match=message):
        feature_shape(tmp_path / "b")


def test_a_non_finite_grid_value_is_named_by_its_three_indices(tmp_path):
    written = write_grid_bundle(tmp_path / "b")
    bad = written["val"].copy()
    bad[2, 1, 3] = np.inf
    overwrite_features(tmp_path / "b" / "val_features.h5", bad)
    with pytest.raises(BundleError, match=r"val_features\.h5: dataset 'features' holds a non-finite value inf at "
                                          r"\[2, 1, 3\]"):
        load_coco_data(tmp_path / "b")


def test_grid_size_is_checked_against_the_file_before_reading(tmp_path):
    """A grid declaring more than its file stores is refused from the metadata, as vectors are."""
    write_grid_bundle(tmp_path / "b")
    with h5py.File(tmp_path / "b" / "train_features.h5", "w") as f:
        f.create_dataset("features", shape=(6, 100000, 512), dtype=np.float32, chunks=(1, 1000, 512),
                         compression="gzip")
        f["features"][0, :1000] = 1.0
    with pytest.raises(BundleError, match=r"train_features\.h5: dataset 'features' declares 6 x 100000 x 512"):
        load_coco_data(tmp_path / "b")


def test_encoder_record_holds_regions_only_for_grids(tmp_path):
    vector, grid = make_encoder("shapes"), make_encoder("shapes", {"grid": "3"})
    EncoderRecord.of(vector).save(tmp_path / "vector.json")
    EncoderRecord.of(grid).save(tmp_path / "grid.json")
    assert "regions" not in json.loads((tmp_path / "vector.json").read_text())
    assert json.loads((tmp_path / "grid.json").read_text())["regions"] == 9
    assert EncoderRecord.load(tmp_path / "vector.json").feature_shape == (512,)
    assert EncoderRecord.load(tmp_path / "grid.json").feature_shape == (9, 512)
    assert EncoderRecord.load(tmp_path / "grid.json").with_pca(20).feature_shape == (9, 20)


@pytest.mark.parametrize("regions", [0, -2, True, "9", 2.5])
def test_encoder_record_with_a_bad_regions_value_is_refused(tmp_path, regions):
    EncoderRecord.of(make_encoder("shapes", {"grid": "3"})).save(tmp_path / "encoder.json")
    document = json.loads((tmp_path / "encoder.json").read_text())
    (tmp_path / "encoder.json").write_text(json.dumps({**document, "regions": regions}))
    with pytest.raises(EncoderError, match=r"encoder\.json: 'regions' must be"):
        EncoderRecord.load(tmp_path / "encoder.json")


def test_pipeline_refuses_a_record_whose_grid_the_encoder_no_longer_gives(tmp_path):
    EncoderRecord.of(make_encoder("shapes", {"grid": "3"})).save(tmp_path / "encoder.json")
    assert FeaturePipeline.load(tmp_path).feature_shape == (9, 512)
    document = json.loads((tmp_path / "encoder.json").read_text())
    (tmp_path / "encoder.json").write_text(json.dumps({**document, "regions": 16}))
    with pytest.raises(EncoderError, match=r"no longer gives the features recorded: it gave a grid of 16 regions, "
                                           r"it now gives a grid of 9 regions"):
        FeaturePipeline.load(tmp_path)


def test_pca_of_grids_reduces_every_regions_vector_alike():
    grids = np.random.default_rng(1).standard_normal((30, 4, 6))
    pca = Pca.fit(grids, 3)
    flat = Pca.fit(grids.reshape(-1, 6), 3)  # the regions' vectors as 120 samples
    np.testing.assert_allclose(pca.components, flat.components, atol=1e-12)
    reduced = pca.transform(grids)
    assert reduced.shape == (30, 4, 3)
    expected = ((grids.reshape(-1, 6) - flat.mean) @ flat.components.T).reshape(30, 4, 3)
    np.testing.assert_allclose(reduced, expected, rtol=1e-5, atol=1e-6)
