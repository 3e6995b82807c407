"""Damage done to a valid bundle, one kind at a time, and the error each must give: shared by the bundle reader's
tests and the train command's (a damaged bundle is named in one line there too)."""
import json

import h5py
import numpy as np

from conftest import bundle_files, real_vocab


def rewrite_dataset(path, key, value):
    with h5py.File(path, "a") as f:
        del f[key]
        f[key] = value


def corrupt(kind, root):
    """Apply one kind of damage to the bundle at ``root``; returns the regex the error must match."""
    files = bundle_files(root)
    caps, vocab_path, train_feats = files["captions"], files["vocab"], files["train_features"]
    if kind == "missing file":
        files["val_urls"].unlink()
        return r"val2014_urls\.txt: file not found"
    if kind == "missing key":
        with h5py.File(caps, "a") as f:
            del f["val_image_idxs"]
        return r"coco2014_captions\.h5: missing dataset 'val_image_idxs'"
    if kind == "float captions":
        rewrite_dataset(caps, "train_captions", np.ones((80, 17), dtype=np.float32))
        return r"coco2014_captions\.h5: dataset 'train_captions' has dtype float32, expected integers"
    if kind == "captions wrong rank":
        rewrite_dataset(caps, "train_captions", np.ones(80, dtype=np.int32))
        return r"'train_captions' has shape \(80,\), expected 2 dimensions"
    if kind == "index length mismatch":
        rewrite_dataset(caps, "val_image_idxs", np.zeros(5, dtype=np.int32))
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
        rewrite_dataset(train_feats, "features", np.ones((40, 512), dtype=np.int64))
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
        rewrite_dataset(files["val_features"], "features", np.ones((12, 256), dtype=np.float32))
        return r"has features of width 512 but .*val2014_vgg16_fc7_pca\.h5 has width 256"
    if kind == "url count":
        files["train_urls"].write_text("http://example.org/only-one.jpg\n")
        return r"train2014_urls\.txt: 1 URLs for the 40 images"
    raise AssertionError(kind)


BAD_BUNDLES = [
    "missing file", "missing key", "float captions", "captions wrong rank", "index length mismatch",
    "word id out of vocabulary", "image index out of range", "nan feature", "inf feature", "integer features",
    "truncated hdf5", "not hdf5", "malformed json", "vocab without <END>", "inconsistent vocab",
    "feature widths differ", "url count",
]
