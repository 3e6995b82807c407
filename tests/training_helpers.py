"""Small datasets, options and runs shared by the training, checkpoint and command-line tests."""
import json

import h5py
import numpy as np
from click.testing import CliRunner

from captionkit.cli import main
from captionkit.runs import RunDirectory
from conftest import bundle_files, write_bundle

# A model small enough that a whole run takes well under a second.
TINY = {"hidden_dim": 12, "wordvec_dim": 8, "batch_size": 8, "epochs": 2, "eval_images": 6, "num_samples": 3}


def small_vocab(num_words=40):
    """A valid vocabulary: the four special tokens, then word0..word{num_words-1}."""
    idx_to_word = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"word{i}" for i in range(num_words)]
    return {"idx_to_word": idx_to_word, "word_to_idx": {w: i for i, w in enumerate(idx_to_word)}}


def tiny_bundle(directory, images=False, **kwargs):
    """A small valid bundle (24 train images, 8 val images, 2 captions each, 16-d features, 44 words); with
    ``images``, also the pixels files (``bundle_files(...)["{split}_images"]``) holding random 64x64 RGB pixels."""
    options = {"num_train_images": 24, "num_val_images": 8, "feature_dim": 16, "vocab": small_vocab()}
    options.update(kwargs)
    path = write_bundle(directory, **options)
    if images:
        rng = np.random.RandomState(1)
        for split, count in (("train", options["num_train_images"]), ("val", options["num_val_images"])):
            with h5py.File(bundle_files(path)[f"{split}_images"], "w") as f:
                f["images"] = rng.randint(0, 256, size=(count, 64, 64, 3)).astype(np.uint8)
    return path


def learnable_bundle(directory, images=False, classes=4):
    """A tiny bundle whose captions follow from the features: image i belongs to class i % classes, its features
    are that class's one-hot code (plus a little noise), and both its captions are the class's sentence. A model
    that learns the data captions validation images exactly."""
    path = tiny_bundle(directory, images=images)
    rng = np.random.RandomState(0)
    sentences = np.array([[1, 4 + c, 10 + c, 20 + c, 30 + c, 2] for c in range(classes)], dtype=np.int32)
    files = bundle_files(path)
    with h5py.File(files["captions"], "a") as f:
        for split in ("train", "val"):
            labels = f[f"{split}_image_idxs"][()] % classes
            captions = np.zeros_like(f[f"{split}_captions"][()])
            captions[:, : sentences.shape[1]] = sentences[labels]
            f[f"{split}_captions"][...] = captions
    for split in ("train", "val"):
        with h5py.File(files[f"{split}_features"], "a") as f:
            count, dim = f["features"].shape
            codes = np.eye(dim)[np.arange(count) % classes] * 3 + rng.randn(count, dim) * 0.1
            f["features"][...] = codes.astype(np.float32)
    return path


def run_cli(*args, **kwargs):
    """``captionkit ARGS`` through click's runner (arguments converted with str), its result."""
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def val_records(run):
    """The validation records of a run's metrics, in order."""
    return [r for r in RunDirectory(run).read_metrics() if r["kind"] == "val"]


def write_run(path, config, summary, records):
    """A run directory written by hand: config.json, summary.json and the metrics.jsonl ``records``."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
