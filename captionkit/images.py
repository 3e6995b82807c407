"""Images behind a bundle's URLs: the assignment's ``image_from_url``, plus the built-in dataset's pixels.

COCO bundles list Flickr URLs; the built-in dataset lists ``synthetic://{split}/{index}`` and keeps the pixels in
``{split}2014_images.h5`` beside its other files.
"""
import io
import os
import re
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np

__all__ = ["image_from_url", "load_images"]

_SYNTHETIC_URL = re.compile(r"^synthetic://(train|val)/(\d+)$")


def load_images(base_dir, split, indices):
    """Pixels of images ``indices`` of ``split`` from a bundle that stores them -> uint8 (len(indices), H, W, 3).

    Raises FileNotFoundError when the bundle has no ``{split}2014_images.h5`` (COCO bundles do not) and IndexError
    naming the index when one is out of range.
    """
    import h5py

    path = Path(base_dir) / f"{split}2014_images.h5"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: this bundle stores no images for the {split} split")
    indices = np.asarray(indices, dtype=np.int64)
    with h5py.File(path, "r") as f:
        images = f["images"]
        bad = indices[(indices < 0) | (indices >= images.shape[0])]
        if bad.size:
            raise IndexError(f"{path}: image index {bad[0]} is out of range for {images.shape[0]} images")
        order = np.argsort(indices)  # h5py reads fancy indices only in increasing order
        out = np.empty((len(indices),) + images.shape[1:], dtype=images.dtype)
        for position, index in zip(order, indices[order]):
            out[position] = images[index]
    return out


def image_from_url(url, base_dir=None, timeout=10):
    """The image at ``url`` as a uint8 array (H, W, 3), or None (with a warning) when it cannot be had.

    ``synthetic://split/index`` URLs read the pixels from the bundle in ``base_dir`` (default: ``$CAPTIONKIT_DATA_DIR``
    or the built-in dataset); http(s) URLs are downloaded, as in the assignment, whose notebooks skip images that
    return None.
    """
    match = _SYNTHETIC_URL.match(str(url))
    if match:
        if base_dir is None:
            from captionkit.data import DATA_DIR_ENV
            from captionkit.synthetic import builtin_dataset_dir

            base_dir = os.environ.get(DATA_DIR_ENV) or builtin_dataset_dir()
        return load_images(base_dir, match.group(1), [int(match.group(2))])[0]
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        warnings.warn(f"could not fetch image {url}: {exc}", stacklevel=2)
        return None
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
    except OSError as exc:
        warnings.warn(f"{url} is not a readable image: {exc}", stacklevel=2)
        return None
