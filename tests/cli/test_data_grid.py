"""`captionkit data synth --grid K` and `captionkit data import ... --encoder-option grid=K`: bundles of feature
grids, recorded in encoder.json so that new pictures are encoded the same way.

Oracles: the bundle's files read with h5py and json, and the shapes encoder run on the bundle's own pixels (or on
the picture files) outside the commands.
"""
import json

import h5py
import numpy as np

from captionkit.bundle.reader import feature_shape, load_coco_data
from captionkit.encoders import make_encoder
from captionkit.encoders.pipeline import FeaturePipeline
from captionkit.images import read_image
from training_helpers import run_cli


def test_synth_grid_writes_a_bundle_of_grids_recorded_in_its_encoder_record(tmp_path):
    bundle = tmp_path / "grid"
    result = run_cli("data", "synth", bundle, "--grid", 2, "--num-train", 6, "--num-val", 3, "--seed", 5)
    assert result.exit_code == 0, result.output
    assert "features on a 2x2 grid" in result.output
    data = load_coco_data(bundle)
    assert data["train_features"].shape == (6, 4, 512) and data["val_features"].shape == (3, 4, 512)
    assert feature_shape(bundle) == (4, 512)
    record = json.loads((bundle / "encoder.json").read_text())
    assert (record["encoder"], record["options"], record["regions"], record["output_dim"]) == ("shapes",
                                                                                               {"grid": "2"}, 4, 512)
    with h5py.File(bundle / "val_images.h5") as f:
        pixels = f["images"][()]
    expected = make_encoder("shapes", {"grid": "2"}).encode(list(pixels))
    np.testing.assert_array_equal(data["val_features"], expected)
    assert FeaturePipeline.load(bundle).feature_shape == (4, 512)

    inspected = run_cli("data", "inspect", bundle, "--examples", 0)
    assert inspected.exit_code == 0, inspected.output
    assert "features (6, 4, 512) float32" in inspected.output


def test_synth_without_grid_still_writes_vectors(tmp_path):
    result = run_cli("data", "synth", tmp_path / "flat", "--num-train", 4, "--num-val", 2)
    assert result.exit_code == 0, result.output
    assert feature_shape(tmp_path / "flat") == (512,)
    assert "regions" not in json.loads((tmp_path / "flat" / "encoder.json").read_text())


def test_synth_grid_is_refused_with_pictures_and_out_of_range(tmp_path):
    result = run_cli("data", "synth", tmp_path / "p", "--pictures", "--grid", 2)
    assert result.exit_code == 2 and "--grid applies to bundles" in result.output
    result = run_cli("data", "synth", tmp_path / "z", "--grid", 0)
    assert result.exit_code == 2 and "--grid" in result.output and "0" in result.output
    assert not (tmp_path / "p").exists() and not (tmp_path / "z").exists()


def test_import_with_a_grid_encoder_and_pca_reduces_each_region_as_captioning_will(tmp_path):
    pictures = tmp_path / "pictures"
    result = run_cli("data", "synth", pictures, "--pictures", "--num-train", 6, "--num-val", 2, "--seed", 2)
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "bundle"
    result = run_cli("data", "import", bundle, "--karpathy", pictures / "dataset_shapes.json", "--images",
                     pictures / "images", "--encoder", "shapes", "--encoder-option", "grid=2", "--pca", 5)
    assert result.exit_code == 0, result.output
    assert "features: a grid of 4 regions x 512 values, PCA to 5" in result.output
    reduced, full = load_coco_data(bundle), load_coco_data(bundle, pca_features=False)
    assert reduced["val_features"].shape == (2, 4, 5) and full["val_features"].shape == (2, 4, 512)
    # The oracle: the PCA's own arrays applied to every region's full vector with numpy.
    with h5py.File(bundle / "pca.h5") as f:
        mean, components = f["mean"][()], f["components"][()]
    np.testing.assert_allclose(reduced["val_features"], (full["val_features"] - mean) @ components.T, atol=1e-4)
    pipeline = FeaturePipeline.load(bundle)
    assert pipeline.feature_shape == (4, 5)
    np.testing.assert_allclose(pipeline.encode_files(list(reduced["val_urls"])), reduced["val_features"], atol=1e-5)


def test_import_with_a_grid_encoder_writes_grids(tmp_path):
    pictures = tmp_path / "pictures"
    result = run_cli("data", "synth", pictures, "--pictures", "--num-train", 4, "--num-val", 2, "--seed", 1)
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "bundle"
    result = run_cli("data", "import", bundle, "--karpathy", pictures / "dataset_shapes.json", "--images",
                     pictures / "images", "--encoder", "shapes", "--encoder-option", "grid=2", "--min-count", 1)
    assert result.exit_code == 0, result.output
    assert "a grid of 4 regions x 512 values per picture" in result.output
    data = load_coco_data(bundle)
    assert data["train_features"].shape == (4, 4, 512)
    files = [read_image(url) for url in data["val_urls"]]
    np.testing.assert_array_equal(data["val_features"], make_encoder("shapes", {"grid": "2"}).encode(files))
    assert json.loads((bundle / "encoder.json").read_text())["regions"] == 4
    assert json.loads((bundle / "import.json").read_text())["regions"] == 4
