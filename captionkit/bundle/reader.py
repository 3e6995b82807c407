"""Reading and checking datasets in the COCO captioning bundle layout of the CS231n assignment.

A bundle is a directory holding, under the names captionkit writes (the assignment's names in brackets, still
read):

- ``captions.h5`` [``coco2014_captions.h5``]: ``train_captions`` (N, T) int, ``train_image_idxs`` (N,) int,
  ``val_captions``, ``val_image_idxs``, and optionally ``test_captions``, ``test_image_idxs``; each caption row is
  ``<START>`` words ``<END>`` then ``<NULL>`` padding;
- ``{split}_features.h5`` [``{split}2014_vgg16_fc7.h5``]: dataset ``features`` (num_images, D) float, the image
  encoder's output, or (num_images, L, D) for a grid of L image regions (an attention model's input; every split
  the same L and D); ``{split}_features_pca.h5`` [``{split}2014_vgg16_fc7_pca.h5``]: the same reduced by PCA;
- ``vocab.json`` [``coco2014_vocab.json``]: ``{"idx_to_word": [...], "word_to_idx": {...}}`` with ``<NULL>``=0,
  ``<START>``=1, ``<END>``=2, ``<UNK>``=3;
- ``{split}_urls.txt`` [``{split}2014_urls.txt``]: one image per line: a URL, or the image file's path;
- optionally ``{split}_images.h5`` [``{split}2014_images.h5``]: dataset ``images`` (num_images, H, W, 3) uint8;
- optionally ``encoder.json`` and ``pca.h5``: how the features were made (:mod:`captionkit.encoders.pipeline`), so
  that new images can go through the same pipeline.

A directory holding ``captions.h5`` is read with captionkit's names, one holding ``coco2014_captions.h5`` with the
assignment's. Every entry point (API, solver, CLI) reads bundles through :func:`load_coco_data`, so they all get
the same checks; a problem raises :class:`BundleError` naming the file, key and offending value.

Every size a file states is checked before anything is allocated for it: a dataset must be stored in its own file
(hard links only: no external or soft links, virtual datasets or external raw storage) and hold the bytes it
declares (:func:`checked_dataset`), and the shapes of the bundle's files must agree with each other before any array
is read; ids are range-checked on the file's own integer type before being narrowed to int32.
"""
import math
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from captionkit.checks import integer
from captionkit.bundle.layout import (
    ENCODER_FILE,
    PCA_FILE,
    REQUIRED_SPLITS,
    SPLITS,
    bundle_layout,
    bundle_paths,
    images_path,
)
from captionkit.safeio import hdf5_errors, read_json, read_lines, size_text
from captionkit.vocabulary import SPECIAL_TOKENS, Vocabulary, caption_text

__all__ = [
    "ENCODER_FILE",
    "PCA_FILE",
    "REQUIRED_SPLITS",
    "SPECIAL_TOKENS",
    "SPLITS",
    "BundleError",
    "bundle_layout",
    "bundle_paths",
    "check_bundle",
    "checked_dataset",
    "decode_captions",
    "feature_shape",
    "images_path",
    "load_coco_data",
    "load_images",
    "sample_coco_minibatch",
]

# Bounds on what a file may make captionkit allocate (docs/dataset.md, "What bundle reading refuses").
# A chunked (compressed) HDF5 dataset may declare at most MAX_INFLATION times the bytes the file stores for it, and no
# dataset may declare more than MAX_INFLATION times the size of its file: gzip at captionkit's settings shrinks
# features and pixels 1-5x, while a chunk of zeros shrinks about 1000x, which is how a small file asks for gigabytes.
MAX_INFLATION = 256
MAX_VOCAB_BYTES = 16 * 2**20  # a vocabulary file; COCO's 1004 words take 30 KB, 100,000 words about 3 MB
MAX_URL_CHARS = 2**16  # one line of a URL list: a URL or an image file's path
# A URL list becomes an array of fixed-width strings, count x longest line x 4 bytes: at most URL_ARRAY_FACTOR times
# the file's size (URL_ARRAY_FLOOR for small files), so one long line among many short ones cannot ask for gigabytes.
URL_ARRAY_FACTOR = 32
URL_ARRAY_FLOOR = 64 * 2**20
MAX_URL_FILE_BYTES = 2**30  # a URL list; COCO's 83,000 training URLs take about 5 MB
_MAX_UTF8_BYTES = 4  # bytes of one character in UTF-8, at most

class BundleError(ValueError):
    """A dataset bundle is missing a file or key, or holds values that cannot be right."""


def _require_file(path):
    if not path.is_file():
        raise BundleError(f"{path}: file not found (a COCO captioning bundle needs it)")


def checked_dataset(path, h5file, key, error=BundleError):
    """The dataset ``key`` of ``h5file`` (the open HDF5 file ``path``), once its metadata show that reading it
    allocates no more than the file can hold. Reads no data.

    Refused with ``error`` (one line naming ``path`` and ``key``): a missing key; a link that is not a hard link (an
    external link into another file, a soft link); anything but a dataset; a virtual dataset or one whose raw data is
    kept in external files; a null dataspace; a dtype other than integers and floats; a declared size (shape x item
    size) that the stored bytes do not back: a contiguous dataset must store exactly its declared bytes (one never
    written stores none), a chunked (compressed) one may declare at most :data:`MAX_INFLATION` times what it stores,
    and no dataset may declare more than :data:`MAX_INFLATION` times the size of its file. h5py's own errors (a
    corrupt file) propagate for the caller to name.
    """
    import h5py
    from h5py import h5d

    try:
        link = h5file.get(key, getlink=True)  # the link itself: an external one is not followed
    except TypeError:  # h5py: "Unknown link type" (a user-defined link)
        link = None if key not in h5file else "a link of an unknown type"
    if link is None:
        raise error(f"{path}: missing dataset {key!r} (found: {', '.join(sorted(h5file.keys()))})")
    outside = "captionkit reads only data stored in the file itself"
    if isinstance(link, h5py.ExternalLink):
        raise error(f"{path}: {key!r} is an external link to {link.filename}:{link.path}; {outside}")
    if isinstance(link, h5py.SoftLink):
        raise error(f"{path}: {key!r} is a soft link to {link.path}; captionkit reads datasets under their own "
                    "names only (hard links)")
    if not isinstance(link, h5py.HardLink):
        raise error(f"{path}: {key!r} is {link}; captionkit reads datasets under their own names only (hard links)")
    node = h5file[key]
    if not isinstance(node, h5py.Dataset):
        what = "a group" if isinstance(node, h5py.Group) else f"a {type(node).__name__}"
        raise error(f"{path}: {key!r} is {what}, expected a dataset")
    if node.is_virtual:
        raise error(f"{path}: dataset {key!r} is a virtual dataset (its data lives in other datasets or files); "
                    f"{outside}")
    if node.external:
        files = ", ".join(str(entry[0]) for entry in node.external)
        raise error(f"{path}: dataset {key!r} keeps its raw data in external files ({files}); {outside}")
    if node.shape is None:
        raise error(f"{path}: dataset {key!r} is empty (a null dataspace), expected an array")
    if node.dtype.kind not in "iuf":
        raise error(f"{path}: dataset {key!r} has dtype {node.dtype}, expected numbers")

    declared = math.prod(node.shape) * node.dtype.itemsize  # Python integers: no overflow however large the shape
    stored = node.id.get_storage_size()
    file_size = os.path.getsize(path)
    shape = " x ".join(str(n) for n in node.shape) if node.shape else "1"
    claim = f"{path}: dataset {key!r} declares {shape} {node.dtype} values ({size_text(declared)})"
    if declared and not stored:
        raise error(f"{claim} but the file stores 0 bytes of them")
    if stored > file_size:
        raise error(f"{claim} stored in {stored} bytes, but the file is only {file_size} bytes long")
    if node.id.get_create_plist().get_layout() == h5d.CHUNKED:
        if declared > MAX_INFLATION * stored:
            raise error(f"{claim} but the file stores only {stored} bytes of them: more than the {MAX_INFLATION}x "
                        "a compressed dataset may expand")
    elif stored != declared:  # contiguous or compact: the data are stored as they are
        raise error(f"{claim} but the file stores {stored} bytes of them")
    # Implied by the checks above; kept as a bound that does not rest on the storage size HDF5 reports.
    if declared > MAX_INFLATION * file_size:
        raise error(f"{claim}, more than {MAX_INFLATION} times the file's {size_text(file_size)}")
    return node


def _open_h5(stack, path):
    """Open the HDF5 file ``path`` for reading in ``stack`` (a contextlib.ExitStack)."""
    import h5py

    _require_file(path)
    with hdf5_errors(path, BundleError):
        return stack.enter_context(h5py.File(path, "r"))


def _check_integer(path, key, array, ndim):
    if array.dtype.kind not in "iu":
        raise BundleError(f"{path}: dataset {key!r} has dtype {array.dtype}, expected integers")
    if array.ndim != ndim:
        raise BundleError(f"{path}: dataset {key!r} has shape {array.shape}, expected {ndim} dimensions")


def _captioned_splits(path):
    """The splits whose captions ``path`` holds: train and val, and test when the file has it."""
    import h5py

    _require_file(path)
    with hdf5_errors(path, BundleError), h5py.File(path, "r") as f:
        has_test = "test_captions" in f or "test_image_idxs" in f  # links are not followed here
    return SPLITS if has_test else REQUIRED_SPLITS


def _caption_datasets(path, h5file, splits):
    """The checked caption and image-index datasets of ``splits``, their shapes agreeing; no data read."""
    datasets = {}
    with hdf5_errors(path, BundleError):
        for split in splits:
            for what in ("captions", "image_idxs"):
                datasets[f"{split}_{what}"] = checked_dataset(path, h5file, f"{split}_{what}")
    for split in splits:
        captions, idxs = datasets[f"{split}_captions"], datasets[f"{split}_image_idxs"]
        _check_integer(path, f"{split}_captions", captions, 2)
        _check_integer(path, f"{split}_image_idxs", idxs, 1)
        if captions.shape[1] < 2:
            raise BundleError(f"{path}: {split}_captions has shape {captions.shape}; rows need <START> and a word")
        if idxs.shape[0] != captions.shape[0]:
            raise BundleError(
                f"{path}: {split}_image_idxs has {idxs.shape[0]} entries but {split}_captions has "
                f"{captions.shape[0]} rows"
            )
    return datasets


def _feature_dataset(path, h5file):
    """The checked ``features`` dataset of a features file; no data read."""
    with hdf5_errors(path, BundleError):
        node = checked_dataset(path, h5file, "features")
    if node.dtype.kind != "f":
        raise BundleError(f"{path}: dataset 'features' has dtype {node.dtype}, expected floating point")
    if node.ndim not in (2, 3):
        raise BundleError(f"{path}: dataset 'features' has shape {node.shape}, expected (num_images, D) vectors or "
                          "(num_images, L, D) grids of L regions")
    if node.ndim == 3 and 0 in node.shape[1:]:
        raise BundleError(f"{path}: dataset 'features' has shape {node.shape}: a grid needs at least one region "
                          "(L) of at least one value (D)")
    return node


def _check_shapes(paths, splits, features, url_counts):
    """The declared sizes of the bundle's files against each other, before any array is read."""
    for split in splits[1:]:
        train_shape, shape = features["train"].shape[1:], features[split].shape[1:]
        if shape == train_shape:
            continue
        if len(shape) == len(train_shape) == 1:
            raise BundleError(
                f"{paths['train_features']} has features of width {train_shape[0]} but "
                f"{paths[f'{split}_features']} has width {shape[0]}"
            )
        raise BundleError(
            f"{paths['train_features']}: dataset 'features' holds {_per_image(train_shape)} per image but "
            f"{paths[f'{split}_features']}'s holds {_per_image(shape)}"
        )
    for split in splits:
        num_images, num_urls = features[split].shape[0], url_counts[split][0]
        if num_urls != num_images:
            raise BundleError(
                f"{paths[f'{split}_urls']}: {num_urls} URLs for the {num_images} images in "
                f"{paths[f'{split}_features']}"
            )
        if num_images > np.iinfo(np.int32).max:  # image ids are int32 once loaded
            raise BundleError(f"{paths[f'{split}_features']}: {num_images} images, more than int32 image ids hold")


def _per_image(shape):
    """One image's features' shape in words: "512 values" or "a grid of 49 regions x 512 values"."""
    return f"{shape[0]} values" if len(shape) == 1 else f"a grid of {shape[0]} regions x {shape[1]} values"


def _read_captions(paths, split, datasets, vocab_size, num_images):
    """Read one split's captions and image indices, check their values on the file's own integer type, and only
    then narrow them to int32 (a value like 2**32 + 5 must be refused, not wrapped to 5)."""
    path = paths["captions"]
    with hdf5_errors(path, BundleError):
        captions = datasets[f"{split}_captions"][()]
        idxs = datasets[f"{split}_image_idxs"][()]
    out_of_vocab = (captions < 0) | (captions >= vocab_size)
    if out_of_vocab.any():
        row, col = np.argwhere(out_of_vocab)[0]
        raise BundleError(
            f"{path}: {split}_captions[{row}, {col}] = {captions[row, col]} is outside the "
            f"vocabulary of {vocab_size} words in {paths['vocab']}"
        )
    bad = (idxs < 0) | (idxs >= num_images)
    if bad.any():
        row = int(np.argmax(bad))
        raise BundleError(
            f"{path}: {split}_image_idxs[{row}] = {idxs[row]} is out of range for the "
            f"{num_images} images in {paths[f'{split}_features']}"
        )
    return captions.astype(np.int32, copy=False), idxs.astype(np.int32, copy=False)


def _read_features(path, node):
    with hdf5_errors(path, BundleError):
        features = node[()]
    finite = np.isfinite(features)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise BundleError(
            f"{path}: dataset 'features' holds a non-finite value {features[where]} at "
            f"[{', '.join(map(str, where))}]"
        )
    return features


def _read_vocab(path):
    _require_file(path)
    document = read_json(path, MAX_VOCAB_BYTES, "vocabulary", BundleError)
    vocabulary = Vocabulary.from_document(document, path, BundleError)
    return vocabulary.idx_to_word, vocabulary.word_to_idx


def _url_lines(path):
    """The stripped lines of the URL list ``path``, read one at a time (:func:`captionkit.safeio.read_lines`), none
    longer than MAX_URL_CHARS."""
    for number, raw in read_lines(path, MAX_URL_FILE_BYTES, _MAX_UTF8_BYTES * MAX_URL_CHARS + 2, "URL list",
                                  BundleError):
        try:
            line = None if raw is None else raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"{path}: cannot read URL list ({exc})") from exc
        if line is None or len(line.rstrip("\r\n")) > MAX_URL_CHARS:
            raise BundleError(f"{path}: line {number} is longer than {MAX_URL_CHARS} characters (a URL or an image "
                              "file's path is expected)")
        yield line.strip()


def _scan_urls(path):
    """(number of lines, longest stripped line) of a URL list, read one line at a time and nothing kept."""
    _require_file(path)
    count = widest = 0
    for url in _url_lines(path):
        count += 1
        widest = max(widest, len(url))
    return count, widest


def _read_urls(path, count, widest):
    """The URL list as an array of ``count`` strings, its size (count x widest x 4 bytes) checked first."""
    if count == 0:
        return np.asarray([])
    width = max(widest, 1)
    nbytes = count * width * np.dtype("<U1").itemsize
    limit = max(URL_ARRAY_FLOOR, URL_ARRAY_FACTOR * os.path.getsize(path))
    if nbytes > limit:
        raise BundleError(f"{path}: {count} lines, the longest {widest} characters, would take {size_text(nbytes)} "
                          f"as an array; captionkit allows {URL_ARRAY_FACTOR} times the file's size (at least "
                          f"{size_text(URL_ARRAY_FLOOR)})")
    urls = np.empty(count, dtype=f"<U{width}")
    rows = 0
    for url in _url_lines(path):
        if rows >= count or len(url) > width:
            break
        urls[rows] = url
        rows += 1
    else:
        if rows == count:
            return urls
    raise BundleError(f"{path}: the file changed while being read")


def load_coco_data(base_dir, max_train=None, pca_features=True):
    """Load a captioning bundle into the assignment's dictionary.

    Keys: train_captions (N, T) int32, train_image_idxs (N,) int32, val_captions, val_image_idxs, train_features
    (num_train_images, D), or (num_train_images, L, D) in a bundle of grids, val_features, idx_to_word (list),
    word_to_idx (dict), train_urls, val_urls (arrays of str), and the same test_* keys when the bundle has a test
    split. ``base_dir``: the bundle directory
    (:func:`captionkit.data.load_coco_data` also finds the default one). ``pca_features``: the bundle's
    PCA-reduced features, when it has them (see :func:`bundle_paths`).
    ``max_train`` keeps that many training captions drawn with replacement by ``np.random.randint``, as the
    assignment does (seed ``np.random`` for a reproducible subset). Raises :class:`BundleError` on bad data.

    The small files come first (vocabulary, URL lists, read with bounded memory), then every HDF5 dataset's
    metadata (:func:`checked_dataset`) and the sizes the files declare against each other; arrays are read last.
    """
    data = _read_bundle(Path(base_dir), pca_features)
    if max_train is not None:
        integer("max_train", max_train, optional=True)
        mask = np.random.randint(data["train_captions"].shape[0], size=max_train)
        data["train_captions"] = data["train_captions"][mask]
        data["train_image_idxs"] = data["train_image_idxs"][mask]
    return data


def check_bundle(base_dir, pca_features=True):
    """Raise :class:`BundleError` unless ``base_dir`` is a bundle :func:`load_coco_data` reads: every check it
    makes, on every value (the downloader runs it on an unpacked archive before putting it in place)."""
    _read_bundle(Path(base_dir), pca_features)


def _read_bundle(base, pca_features):
    """Every split's arrays, the vocabulary and the URL lists of the bundle directory ``base``, checked."""

    if not base.is_dir():
        raise BundleError(f"{base}: dataset directory not found")
    captions_path = bundle_paths(base, pca_features)["captions"]
    if not captions_path.is_file() and bundle_layout(base) == "captionkit":
        raise BundleError(f"{captions_path}: file not found, nor the CS231n assignment's coco2014_captions.h5: "
                          f"{base} is not a captioning bundle")
    splits = _captioned_splits(captions_path)
    paths = bundle_paths(base, pca_features, splits=splits)
    data = {}
    data["idx_to_word"], data["word_to_idx"] = _read_vocab(paths["vocab"])
    url_counts = {split: _scan_urls(paths[f"{split}_urls"]) for split in splits}
    with ExitStack() as stack:
        captions = _caption_datasets(paths["captions"], _open_h5(stack, paths["captions"]), splits)
        features = {}
        for split in splits:
            path = paths[f"{split}_features"]
            features[split] = _feature_dataset(path, _open_h5(stack, path))
        _check_shapes(paths, splits, features, url_counts)
        for split in splits:
            data[f"{split}_captions"], data[f"{split}_image_idxs"] = _read_captions(
                paths, split, captions, len(data["idx_to_word"]), features[split].shape[0])
        for split in splits:
            data[f"{split}_features"] = _read_features(paths[f"{split}_features"], features[split])
    for split in splits:
        data[f"{split}_urls"] = _read_urls(paths[f"{split}_urls"], *url_counts[split])
    return data


def feature_shape(base_dir, pca_features=True):
    """One image's features' shape in the bundle ``base_dir``: ``(D,)``, or ``(L, D)`` for grids of L regions; what
    a model's ``spec.fits(feature_shape=...)`` takes. Read from the training features' metadata only (checked as
    :func:`load_coco_data` checks them; the splits' agreement is checked when the bundle is loaded)."""
    path = bundle_paths(Path(base_dir), pca_features)["train_features"]
    with ExitStack() as stack:
        return tuple(_feature_dataset(path, _open_h5(stack, path)).shape[1:])


def load_images(base_dir, split, indices):
    """Pixels of some images of ``split`` from ``{split}_images.h5`` (dataset ``images``, (num_images, H, W, 3)
    uint8), or None when the bundle has no such file (COCO bundles carry URLs, not pixels).

    ``indices``: image indices (any order). Returns (len(indices), H, W, 3) uint8; raises :class:`BundleError`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = images_path(Path(base_dir), split)
    if not path.is_file():
        return None
    import h5py

    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    with hdf5_errors(path, BundleError), h5py.File(path, "r") as f:
        node = checked_dataset(path, f, "images")
        if node.dtype != np.uint8 or node.ndim != 4 or node.shape[3] != 3:
            raise BundleError(
                f"{path}: dataset 'images' has dtype {node.dtype} and shape {node.shape}, expected uint8 "
                "(num_images, height, width, 3)"
            )
        bad = (indices < 0) | (indices >= node.shape[0])
        if bad.any():
            raise BundleError(f"{path}: image index {indices[bad][0]} is out of range for {node.shape[0]} images")
        order = np.unique(indices)  # h5py reads increasing indices only
        pixels = node[order]
    return pixels[np.searchsorted(order, indices)]


def sample_coco_minibatch(data, batch_size=100, split="train", rng=None):
    """Draw ``batch_size`` captions of ``split`` with replacement -> (captions (B, T), features (B, D) or (B, L, D),
    urls (B,)).

    ``rng`` (a ``np.random.RandomState``) defaults to the global ``np.random``, as in the assignment.
    """
    if f"{split}_captions" not in data:
        raise ValueError(f"split must be one of the data's splits "
                         f"({', '.join(s for s in SPLITS if f'{s}_captions' in data)}), got {split!r}")
    integer("batch_size", batch_size)
    split_size = data[f"{split}_captions"].shape[0]
    if split_size == 0:
        raise ValueError(f"the {split} split has no captions to sample from")
    rng = np.random if rng is None else rng
    mask = rng.choice(split_size, batch_size)
    captions = data[f"{split}_captions"][mask]
    image_idxs = data[f"{split}_image_idxs"][mask]
    return captions, data[f"{split}_features"][image_idxs], data[f"{split}_urls"][image_idxs]


def decode_captions(captions, idx_to_word):
    """Word ids to strings: (N, T) -> list of N strings, or (T,) -> one string.

    ``<NULL>`` is dropped and each caption stops after ``<END>``; ``<START>`` and ``<END>`` are kept, as in the
    assignment (:func:`captionkit.vocabulary.caption_text` with ``keep_boundaries=True``). ``idx_to_word`` is a list
    or a dict from id to word.
    """
    captions = np.asarray(captions)
    if captions.ndim == 1:
        return caption_text(captions, idx_to_word, keep_boundaries=True)
    return [caption_text(row, idx_to_word, keep_boundaries=True) for row in captions]
