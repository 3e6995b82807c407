"""Crafted bundle files are refused before captionkit allocates for them (issue 14).

Every crafted file is built here and is a few KB. The memory claims are checked in a child process whose address
space is capped: a valid bundle loads under the cap, an allocation of what the crafted files declare does not fit
under it, and the crafted files give a BundleError (EncoderError for pca.h5), never a MemoryError.
"""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from captionkit.bundle.layout import LAYOUTS
from captionkit.data import MAX_INFLATION, MAX_URL_CHARS, MAX_VOCAB_BYTES, BundleError, load_coco_data, load_images
from captionkit.encoders.base import EncoderError
from captionkit.encoders.pipeline import EncoderRecord, Pca
from training_helpers import tiny_bundle

NAMES = LAYOUTS["cs231n"]  # the layout tiny_bundle writes
CAPTIONS, VOCAB, TRAIN_URLS = NAMES["captions"], NAMES["vocab"], NAMES["urls"].format(split="train")
FEATURES = NAMES["features_pca"].format(split="train")  # 24 x 16 float32 in tiny_bundle; 44 words, 48 train captions
VAL_IMAGES = NAMES["images"].format(split="val")
MEMORY_LIMIT = 3 * 2**29  # 1.5 GiB of address space for the child: a tiny bundle needs about 0.2 GiB


def _features_file(bundle, **create):
    """Replace the training features file with one holding ``create_dataset("features", **create)``."""
    with h5py.File(bundle / FEATURES, "w") as f:
        return f.create_dataset("features", **create)


def _rewrite(path, key, value):
    with h5py.File(path, "a") as f:
        del f[key]
        f[key] = value


def _pca_file(path, mean_shape, components_shape, written=True):
    """A pca.h5 holding zeros; ``written=False`` declares the components without writing them."""
    with h5py.File(path, "w") as f:
        f["mean"] = np.zeros(mean_shape)
        if written:
            f["components"] = np.zeros(components_shape)
        else:
            f.create_dataset("components", shape=components_shape, dtype=np.float64)
    return path


_CHILD = r"""
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import numpy as np
from captionkit.data import load_coco_data
from captionkit.encoders.pipeline import Pca
results = []
for kind, target in json.loads(sys.argv[2]):
    try:
        if kind == "allocate":
            np.ones(target, dtype=np.uint8)
            results.append(["ok", None])
        elif kind == "bundle":
            results.append(["ok", list(load_coco_data(target)["train_features"].shape)])
        else:
            results.append(["ok", list(Pca.load(target).components.shape)])
    except BaseException as exc:
        results.append([type(exc).__name__, str(exc)])
print(json.dumps(results))
"""


def _run_limited(cases):
    """Run ``cases`` ([kind, target]) in one child process limited to MEMORY_LIMIT bytes of address space."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(MEMORY_LIMIT), json.dumps(cases)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_crafted_sizes_are_refused_under_a_memory_limit(tmp_path):
    valid = tiny_bundle(tmp_path / "valid")
    unwritten = tiny_bundle(tmp_path / "unwritten")
    _features_file(unwritten, shape=(2_000_000, 512), dtype=np.float32)
    unwritten_10m = tiny_bundle(tmp_path / "unwritten-10m")
    _features_file(unwritten_10m, shape=(10_000_000, 512), dtype=np.float32)
    bomb = tiny_bundle(tmp_path / "gzip-bomb")  # one chunk of zeros written, gzip: about 1000x
    _features_file(bomb, shape=(2_000_000, 512), dtype=np.float32, chunks=(1000, 512), compression="gzip")
    with h5py.File(bomb / FEATURES, "a") as f:
        f["features"][:1000] = 0
    pca = _pca_file(tmp_path / "pca.h5", (512,), (1_000_000, 512), written=False)
    for path in (unwritten, unwritten_10m, bomb):
        assert (path / FEATURES).stat().st_size < 16 * 2**10

    results = _run_limited([
        ["bundle", str(valid)],
        ["allocate", 2_000_000 * 512 * 4],  # what the crafted features declare does not fit under the limit
        ["bundle", str(unwritten)],
        ["bundle", str(unwritten_10m)],
        ["bundle", str(bomb)],
        ["pca", str(pca)],
    ])
    assert results[0] == ["ok", [24, 16]]
    assert results[1][0] == "MemoryError"
    features = str(unwritten / FEATURES)
    assert results[2] == ["BundleError", f"{features}: dataset 'features' declares 2000000 x 512 float32 values "
                                         "(3.8 GiB) but the file stores 0 bytes of them"]
    assert results[3][0] == "BundleError"
    assert "declares 10000000 x 512 float32 values (19.1 GiB) but the file stores 0 bytes" in results[3][1]
    assert results[4][0] == "BundleError"
    assert results[4][1].startswith(f"{bomb / FEATURES}: dataset 'features' declares 2000000 x 512 float32 values")
    assert f"more than the {MAX_INFLATION}x a compressed dataset may expand" in results[4][1]
    assert results[5] == ["EncoderError", f"{pca}: dataset 'components' declares 1000000 x 512 float64 values "
                                          "(3.8 GiB) but the file stores 0 bytes of them"]


def test_a_compressed_dataset_may_not_expand_beyond_the_bound(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    zeros = np.zeros((20000, 512), np.float32)  # 40 MB of zeros: gzip keeps about 40 KB of them
    _features_file(bundle, data=zeros, chunks=(2000, 512), compression="gzip", compression_opts=9)
    with h5py.File(bundle / FEATURES, "a") as f:  # make the file large enough for the bound on its size to pass
        f["padding"] = np.random.RandomState(0).randint(0, 256, size=200_000).astype(np.uint8)
    with pytest.raises(BundleError, match=rf"{FEATURES}: dataset 'features' declares 20000 x 512 float32 values "
                                          rf"\(39\.1 MiB\) but the file stores only \d+ bytes of them: more than the "
                                          rf"{MAX_INFLATION}x a compressed dataset may expand"):
        load_coco_data(bundle)


def test_compressed_features_within_the_bound_load(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    with h5py.File(bundle / FEATURES) as f:
        features = f["features"][()]
    _features_file(bundle, data=features, chunks=(8, 16), compression="gzip", shuffle=True)
    np.testing.assert_array_equal(load_coco_data(bundle)["train_features"], features)


@pytest.fixture
def reads(monkeypatch):
    """The names of the HDF5 datasets whose data are read (h5py.Dataset.__getitem__) during a test."""
    names = []
    original = h5py.Dataset.__getitem__

    def recording(self, *args, **kwargs):
        names.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording)
    return names


@pytest.mark.parametrize("kind", ["features rows", "image_idxs length", "feature widths"])
def test_declared_sizes_are_compared_before_any_data_is_read(kind, tmp_path, reads):
    bundle = tiny_bundle(tmp_path / "b")
    if kind == "features rows":
        _features_file(bundle, data=np.zeros((25, 16), np.float32))
        pattern = rf"{TRAIN_URLS}: 24 URLs for the 25 images in .*{FEATURES}"
    elif kind == "image_idxs length":
        _rewrite(bundle / CAPTIONS, "val_image_idxs", np.zeros(5, np.int32))
        pattern = r"val_image_idxs has 5 entries but val_captions has 16 rows"
    else:
        _features_file(bundle, data=np.zeros((24, 8), np.float32))
        pattern = rf"{FEATURES} has features of width 8 but .*val2014_vgg16_fc7_pca\.h5 has width 16"
    with pytest.raises(BundleError, match=pattern):
        load_coco_data(bundle)
    assert reads == []


@pytest.mark.parametrize("key, value, message", [
    ("train_captions", (3, 4, 2**32 + 5), r"train_captions\[3, 4\] = 4294967301 is outside the vocabulary of 44 words"),
    ("train_image_idxs", (5, 2**32 + 3), r"train_image_idxs\[5\] = 4294967299 is out of range for the 24 images"),
    ("val_image_idxs", (2, 2**64 - 1), r"val_image_idxs\[2\] = 18446744073709551615 is out of range for the 8 images"),
])
def test_ids_are_range_checked_before_narrowing(key, value, message, tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    with h5py.File(bundle / CAPTIONS) as f:
        array = f[key][()].astype(np.uint64 if value[-1] >= 2**63 else np.int64)
    array[value[:-1]] = value[-1]
    _rewrite(bundle / CAPTIONS, key, array)
    with pytest.raises(BundleError, match=rf"{CAPTIONS}: {message}"):
        load_coco_data(bundle)


def test_wide_integer_ids_in_range_load_as_int32(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    expected = load_coco_data(bundle)
    with h5py.File(bundle / CAPTIONS, "a") as f:
        for key in ("train_captions", "train_image_idxs"):
            array = f[key][()]
            del f[key]
            f[key] = array.astype(np.int64)
    data = load_coco_data(bundle)
    for key in ("train_captions", "train_image_idxs"):
        assert data[key].dtype == np.int32
        np.testing.assert_array_equal(data[key], expected[key])


def test_external_links_are_not_followed(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    outside = tmp_path / "outside.h5"  # a valid features file: following the link would load the bundle
    with h5py.File(outside, "w") as f:
        f["features"] = np.zeros((24, 16), np.float32)
    for target in (outside, tmp_path / "nowhere.h5"):
        with h5py.File(bundle / FEATURES, "w") as f:
            f["features"] = h5py.ExternalLink(str(target), "/features")
        with pytest.raises(BundleError, match=rf"{FEATURES}: 'features' is an external link to {target}:/features; "
                                              "captionkit reads only data stored in the file itself"):
            load_coco_data(bundle)


def test_links_in_the_captions_file_are_refused(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    with h5py.File(bundle / CAPTIONS, "a") as f:
        f["kept"] = f["train_captions"]  # a second hard link to the same dataset
        del f["train_captions"]
        f["train_captions"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/captions")
    with pytest.raises(BundleError, match=rf"{CAPTIONS}: 'train_captions' is an external link to .*elsewhere\.h5"):
        load_coco_data(bundle)
    with h5py.File(bundle / CAPTIONS, "a") as f:
        del f["train_captions"]
        f["train_captions"] = h5py.SoftLink("/kept")
    with pytest.raises(BundleError, match=rf"{CAPTIONS}: 'train_captions' is a soft link to /kept; "
                                          r"captionkit reads datasets under their own names only \(hard links\)"):
        load_coco_data(bundle)
    with h5py.File(bundle / CAPTIONS, "a") as f:
        del f["train_captions"]
        f["train_captions"] = f["kept"]
    assert load_coco_data(bundle)["train_captions"].shape == (48, 17)


def test_virtual_datasets_and_external_storage_are_refused(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as f:
        f["features"] = np.zeros((24, 16), np.float32)
    with h5py.File(bundle / FEATURES, "w") as f:
        layout = h5py.VirtualLayout(shape=(24, 16), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(source), "features", shape=(24, 16))
        f.create_virtual_dataset("features", layout)
    with pytest.raises(BundleError, match=rf"{FEATURES}: dataset 'features' is a virtual dataset"):
        load_coco_data(bundle)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(bytes(24 * 16 * 4))
    _features_file(bundle, shape=(24, 16), dtype=np.float32, external=[(str(raw), 0, 24 * 16 * 4)])
    with pytest.raises(BundleError, match=rf"{FEATURES}: dataset 'features' keeps its raw data in external files"):
        load_coco_data(bundle)


def test_partly_written_contiguous_dataset_is_refused(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    with h5py.File(bundle / CAPTIONS, "a") as f:
        del f["val_image_idxs"]
        f.create_dataset("val_image_idxs", shape=(16,), dtype=np.int32)  # declared, never written
    with pytest.raises(BundleError, match=rf"{CAPTIONS}: dataset 'val_image_idxs' declares 16 int32 values "
                                          r"\(64 bytes\) but the file stores 0 bytes of them"):
        load_coco_data(bundle)


def test_deeply_nested_vocabulary_names_the_file(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    (bundle / VOCAB).write_text("[" * 100_000)
    with pytest.raises(BundleError, match=rf"{VOCAB}: not a readable JSON vocabulary \(nested too deeply\)$"):
        load_coco_data(bundle)


def test_oversized_vocabulary_is_refused(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    with open(bundle / VOCAB, "r+b") as f:
        f.truncate(MAX_VOCAB_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(BundleError, match=rf"{VOCAB}: a vocabulary file is at most 16\.0 MiB"):
        load_coco_data(bundle)


def test_url_lists_are_bounded(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    (bundle / TRAIN_URLS).write_text("x" * (MAX_URL_CHARS + 1) + "\n" + "u\n" * 23)
    with pytest.raises(BundleError, match=rf"{TRAIN_URLS}: line 1 is longer than {MAX_URL_CHARS} characters"):
        load_coco_data(bundle)
    # 400 lines, one of them 65536 characters: a 400 x 65536 array of 4-byte characters (100 MiB) for a 66 KB file
    count = 400
    _features_file(bundle, data=np.zeros((count, 16), np.float32))
    (bundle / TRAIN_URLS).write_text("x" * MAX_URL_CHARS + "\n" + "u\n" * (count - 1))
    with pytest.raises(BundleError, match=rf"{TRAIN_URLS}: 400 lines, the longest 65536 characters, would take "
                                          r"100\.0 MiB as an array"):
        load_coco_data(bundle)


def test_pixels_file_gets_the_same_checks(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", images=True)
    assert load_images(bundle, "val", [1]).shape == (1, 64, 64, 3)
    with h5py.File(bundle / VAL_IMAGES, "w") as f:
        f.create_dataset("images", shape=(100_000, 256, 256, 3), dtype=np.uint8, chunks=(1, 256, 256, 3))
    with pytest.raises(BundleError, match=r"val2014_images\.h5: dataset 'images' declares 100000 x 256 x 256 x 3 "
                                          r"uint8 values \(18\.3 GiB\) but the file stores 0 bytes of them"):
        load_images(bundle, "val", [0])
    with h5py.File(bundle / VAL_IMAGES, "w") as f:
        f["images"] = h5py.ExternalLink(str(tmp_path / "pixels.h5"), "/images")
    with pytest.raises(BundleError, match=r"val2014_images\.h5: 'images' is an external link"):
        load_images(bundle, "val", [0])


def test_pca_file_gets_the_same_checks(tmp_path, reads):
    with pytest.raises(EncoderError, match=r"pca\.h5: 'mean' \(512,\) and 'components' \(6, 256\) do not fit"):
        Pca.load(_pca_file(tmp_path / "pca.h5", (512,), (6, 256)))
    assert reads == []
    with h5py.File(tmp_path / "pca.h5", "w") as f:
        f["mean"] = np.zeros(4)
        f["components"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/components")
    with pytest.raises(EncoderError, match=r"pca\.h5: 'components' is an external link"):
        Pca.load(tmp_path / "pca.h5")
    assert Pca.load(_pca_file(tmp_path / "pca.h5", (4,), (2, 4))).components.shape == (2, 4)


def test_encoder_records_are_bounded(tmp_path):
    path = tmp_path / "encoder.json"
    path.write_text("[" * 100_000)
    with pytest.raises(EncoderError, match=r"encoder\.json: not a readable JSON encoder record \(nested too deeply\)"):
        EncoderRecord.load(path)
    path.write_text(" " * 2**20 + "{}")
    with pytest.raises(EncoderError, match=r"encoder\.json: an encoder record file is at most 1\.0 MiB \(1048576 bytes\)"):
        EncoderRecord.load(path)
