"""`captionkit data inspect`: a bundle's statistics and decoded captions (fetch, synth and import have their own
tests in unit/test_fetch.py, unit/test_synthetic.py, unit/test_importing.py and integration/test_own_data.py).

Oracles: the bundle's arrays read here with h5py and counted with numpy, independently of the command's code.
"""
import h5py
import numpy as np

from conftest import bundle_files
from training_helpers import run_cli, small_vocab, tiny_bundle


def test_inspect_prints_the_bundles_sizes_lengths_and_words(tmp_path):
    bundle = tiny_bundle(tmp_path / "bundle")
    files = bundle_files(bundle)
    with h5py.File(files["captions"]) as f:
        train = f["train_captions"][()]
    words = small_vocab()["idx_to_word"]
    result = run_cli("data", "inspect", bundle, "--examples", 2)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"bundle {bundle}"
    assert lines[1] == "  train: 48 captions (48, 17) int32 of 24 images (2.0 per image); features (24, 16) float32"
    assert lines[2] == "  val: 16 captions (16, 17) int32 of 8 images (2.0 per image); features (8, 16) float32"
    assert lines[3] == "  vocabulary: 44 words including <NULL>, <START>, <END>, <UNK>"
    # The oracle: lengths and word counts of the captions as written (ids 0-2 are <NULL>, <START>, <END>).
    lengths = (train > 2).sum(axis=1)
    assert lines[4] == (f"  train caption length in words: min {lengths.min()}, mean {lengths.mean():.1f}, "
                        f"max {lengths.max()}")
    values, counts = np.unique(lengths, return_counts=True)
    assert lines[5] == "    " + ", ".join(f"{v}: {c}" for v, c in zip(values, counts))
    occurrences = np.bincount(train[train > 2], minlength=len(words))
    top = [f"{words[i]} ({occurrences[i]})" for i in np.argsort(-occurrences, kind="stable")[:15]]
    assert lines[6] == "  most common words: " + ", ".join(top)
    unused = sum(1 for i in range(4, len(words)) if occurrences[i] == 0)
    assert lines[7] == f"  words never used in train captions: {unused}; <UNK> tokens: {occurrences[3]}"
    first = " ".join(words[i] for i in train[0] if i != 0)  # image 0's first caption, <START> to <END>
    assert lines[8:] == [f"  http://example.org/train/0.jpg  {first}",
                         f"  http://example.org/train/1.jpg  {' '.join(words[i] for i in train[2] if i != 0)}"]


def test_inspect_reads_the_raw_features_when_asked(tmp_path):
    bundle = tiny_bundle(tmp_path / "bundle")
    with h5py.File(bundle_files(bundle, pca=False)["train_features"], "w") as f:
        f["features"] = np.zeros((24, 40), np.float32)
    with h5py.File(bundle_files(bundle, pca=False)["val_features"], "w") as f:
        f["features"] = np.zeros((8, 40), np.float32)
    result = run_cli("data", "inspect", bundle, "--raw-features", "--examples", 0)
    assert result.exit_code == 0, result.output
    assert "features (24, 40) float32" in result.output and "http://" not in result.output


def test_inspect_names_the_broken_file_in_one_line(tmp_path):
    bundle = tiny_bundle(tmp_path / "bundle")
    urls = bundle_files(bundle)["val_urls"]
    urls.unlink()
    result = run_cli("data", "inspect", bundle)
    assert result.exit_code == 1
    assert result.output == f"Error: {urls}: file not found (a COCO captioning bundle needs it)\n"
