"""Images: files on disk (``read_image``, ``find_images``) and the pictures behind a bundle's URLs
(the assignment's ``image_from_url``).

COCO bundles list Flickr URLs; the built-in dataset lists ``synthetic://{split}/{index}`` and keeps the pixels in
``{split}_images.h5`` beside its other files; bundles made by ``captionkit data import`` list the image files' paths.
Image files are read with Pillow: any format it opens (PNG, JPEG, WebP, ...), any mode (greyscale, palette, RGBA,
16-bit) converted to 8-bit RGB, turned upright by its EXIF orientation as a photo viewer shows it.

What a picture may cost is bounded before it is decoded: its header's width x height must be at most
``max_pixels`` (:data:`MAX_PICTURE_PIXELS` unless raised, never above Pillow's own hard limit
:data:`PILLOW_HARD_LIMIT`), and a JPEG is decoded straight at the smallest of its built-in scales (1/2, 1/4, 1/8)
that still covers the size its encoder needs (``draft``), so a small file declaring a huge picture is refused and a
12-megapixel photo costs a few megabytes rather than 36.
"""
import io
import os
import re
import struct
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np

from captionkit.data import load_images

__all__ = ["IMAGE_SUFFIXES", "ImageFileError", "MAX_PICTURE_PIXELS", "PILLOW_HARD_LIMIT", "crop_to", "find_images",
           "image_from_url", "local_pictures", "read_image", "resize", "thumbnail"]

# What a directory walk picks up; a file named explicitly is read whatever its suffix.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


# 8192 x 8192: a 48-megapixel phone photo passes, while one picture decodes to at most 200 MB of RGB.
MAX_PICTURE_PIXELS = 8192 * 8192
# Pillow refuses pictures over twice its Image.MAX_IMAGE_PIXELS (a DecompressionBombError) whatever captionkit allows.
PILLOW_HARD_LIMIT = 2 * 89_478_485

# What Pillow's decoders raise on corrupt data besides OSError: a fuzz of read_image met each of them.
_DECODING_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                    struct.error)


class ImageFileError(ValueError):
    """An image file is missing, unreadable, not an image, or too large a picture; the message names it."""


def read_image(path, decode_size=None, max_pixels=MAX_PICTURE_PIXELS):
    """The picture in the file ``path`` as uint8 (H, W, 3) RGB; raises :class:`ImageFileError` naming the file.

    ``decode_size`` (height, width): the smallest picture its user needs; a JPEG is then decoded at the smallest
    scale whose both sides still cover the larger of the two (so either orientation does). A picture whose header
    declares more than ``max_pixels`` pixels is refused before it is decoded. Running out of memory while decoding
    raises MemoryError naming the file and the picture's size.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"{path}: file not found")
    if not path.is_file():
        raise ImageFileError(f"{path}: not a file")
    width = height = None
    try:
        with warnings.catch_warnings():
            # Pillow warns between its two limits (captionkit's own limit, below, decides with one clear message) and
            # about damaged metadata it skips (the picture is still read): neither is printed raw with its source line.
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageFileError(f"{path}: picture too large ({width} x {height} > {max_pixels:,} pixels; "
                                         "the limit is raised with --max-picture-pixels)")
                if decode_size is not None and image.format == "JPEG":
                    side = max(decode_size)
                    image.draft("RGB", (side, side))
                image = ImageOps.exif_transpose(image)
                if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: keep the top 8 bits
                    image = image.point(lambda value: value / 256).convert("L")
                return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:  # over Pillow's hard limit, checked as the header is read
        raise ImageFileError(f"{path}: picture too large ({exc})") from None
    except MemoryError:
        size = "" if width is None else f" of {width} x {height} ({width * height * 3 / 1e6:,.0f} MB as RGB)"
        raise MemoryError(f"{path}: decoding the picture{size} failed; free memory or lower "
                          "--max-picture-pixels") from None
    except ImageFileError:
        raise
    except _DECODING_ERRORS as exc:  # truncated or corrupt data, unreadable file
        raise ImageFileError(f"{path}: cannot read image ({exc})") from None


def resize(image, height, width):
    """``image`` (H, W, 3) uint8 resized to (height, width) as a whole: area averaging to shrink (a picture enlarged
    by a whole factor with repeated pixels comes back exactly), bicubic to enlarge; unchanged when it fits."""
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    shrinking = image.shape[0] >= height and image.shape[1] >= width
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize((width, height), method))


def crop_to(image, height, width):
    """``image`` scaled so that it covers (height, width) with its aspect ratio kept, then cut to it at the centre
    (the usual evaluation transform of ImageNet models)."""
    rows, cols = image.shape[:2]
    scale = max(height / rows, width / cols)
    scaled_rows, scaled_cols = max(height, round(rows * scale)), max(width, round(cols * scale))
    scaled = resize(image, scaled_rows, scaled_cols)
    top, left = (scaled_rows - height) // 2, (scaled_cols - width) // 2
    return scaled[top:top + height, left:left + width]


def thumbnail(path, max_side=256, max_pixels=MAX_PICTURE_PIXELS):
    """The picture in the file ``path`` shrunk to at most ``max_side`` pixels a side (aspect kept), decoded at a
    reduced scale where the format allows; raises :class:`ImageFileError` as :func:`read_image` does."""
    picture = read_image(path, (max_side, max_side), max_pixels)
    scale = max_side / max(picture.shape[:2])
    if scale < 1:
        picture = resize(picture, max(1, round(picture.shape[0] * scale)), max(1, round(picture.shape[1] * scale)))
    return picture


def local_pictures(urls, max_side=256):
    """The pictures of a bundle's image list when every entry is a readable local file (bundles made by
    ``captionkit data import`` list paths), shrunk to at most ``max_side`` pixels a side; else None."""
    pictures = []
    for url in urls:
        try:
            picture = thumbnail(url, max_side) if Path(str(url)).is_file() else None
        except ImageFileError:
            picture = None
        if picture is None:
            return None
        pictures.append(picture)
    return pictures


def find_images(paths):
    """Image files named by ``paths``: files as given, directories walked (sorted, hidden entries skipped) for files
    with an image suffix (:data:`IMAGE_SUFFIXES`). Raises :class:`ImageFileError` for a path that does not exist or
    a directory holding no images."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = []
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                inside.extend(Path(root) / name for name in sorted(files)
                              if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise ImageFileError(f"{path}: a directory with no image files "
                                     f"({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.extend(inside)
        elif path.exists():
            found.append(path)
        else:
            raise ImageFileError(f"{path}: file not found")
    return found

_SYNTHETIC_URL = re.compile(r"^synthetic://(train|val)/(\d+)$")


def image_from_url(url, base_dir=None, timeout=10):
    """The image at ``url`` as a uint8 array (H, W, 3), or None (with a warning) when it cannot be had.

    ``synthetic://split/index`` URLs read the pixels from the bundle in ``base_dir`` (default: ``$CAPTIONKIT_DATA_DIR``
    or the built-in dataset); http(s) URLs are downloaded, as in the assignment, whose notebooks skip images that
    return None.
    """
    match = _SYNTHETIC_URL.match(str(url))
    if match:
        pixels = load_images(base_dir, match.group(1), [int(match.group(2))])
        if pixels is None:
            warnings.warn(f"the bundle holds no pixels for {url}", stacklevel=2)
            return None
        return pixels[0]
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
