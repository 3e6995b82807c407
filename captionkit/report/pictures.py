"""The gallery's pictures, as files inside the page's folder so that it opens from disk and can be zipped and shared.

A bundle's picture comes from its pixels (``{split}_images.h5``: the built-in dataset), from the picture file its
image list names (a bundle made by ``captionkit data import``) or, for a COCO bundle, from its URL: a link, shown
inline (``<img src=URL>``) only when the caller allows the page to reach the network. Thumbnails are named by their
position (``pictures/0007.png``), never by a file's own name, which is only ever shown as text.
"""
from dataclasses import dataclass
from pathlib import Path

from captionkit.atomicfile import atomic_write
from captionkit.data import load_images
from captionkit.images import ImageFileError, MAX_PICTURE_PIXELS, resize, thumbnail

__all__ = ["PICTURES_DIR", "THUMBNAIL_SIDE", "PictureFile", "file_pictures", "split_pictures"]

PICTURES_DIR = "pictures"  # the thumbnails' folder inside the page's folder
THUMBNAIL_SIDE = 256  # pixels a side a thumbnail is shrunk to (at most)
_WEB = ("http://", "https://")


@dataclass
class PictureFile:
    """Where the page finds one picture: ``src`` (a path relative to the page, or a URL when allowed online),
    ``link`` (the picture's URL), ``note`` (why there is no ``src``)."""

    src: str | None = None
    link: str | None = None
    note: str | None = None


def _save_png(picture, out_dir, position):
    """Write ``picture`` (H, W, 3) uint8 as ``out_dir/pictures/NNNN.png`` -> its path relative to ``out_dir``."""
    from PIL import Image

    relative = f"{PICTURES_DIR}/{position:04d}.png"
    (Path(out_dir) / PICTURES_DIR).mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(out_dir) / relative) as f:
        Image.fromarray(picture).save(f, format="PNG")
    return relative


def _shrunk(picture):
    """``picture`` with its longer side at most THUMBNAIL_SIDE pixels, aspect kept."""
    scale = THUMBNAIL_SIDE / max(picture.shape[:2])
    if scale >= 1:
        return picture
    return resize(picture, max(1, round(picture.shape[0] * scale)), max(1, round(picture.shape[1] * scale)))


def _file_picture(path, out_dir, position, max_pixels):
    try:
        return PictureFile(src=_save_png(thumbnail(path, THUMBNAIL_SIDE, max_pixels), out_dir, position))
    except ImageFileError as exc:  # the page still shows the captions; the picture's row says what went wrong
        return PictureFile(note=str(exc))


def split_pictures(bundle, split, images, urls, out_dir, online=False, max_pixels=MAX_PICTURE_PIXELS):
    """A :class:`PictureFile` for each image index of ``images`` of ``split`` of the bundle in ``bundle``, whose image
    list is ``urls`` (None when it has none); thumbnails are written into ``out_dir``."""
    pixels = load_images(bundle, split, images)
    if pixels is not None:
        return [PictureFile(src=_save_png(_shrunk(picture), out_dir, k)) for k, picture in enumerate(pixels)]
    found = []
    for k, image in enumerate(images):
        url = None if urls is None else str(urls[image])
        if url is None:
            found.append(PictureFile(note="the bundle lists no pictures"))
        elif url.startswith(_WEB):
            found.append(PictureFile(src=url if online else None, link=url,
                                     note=None if online else "a web picture: shown with --online"))
        elif Path(url).is_file():
            found.append(_file_picture(url, out_dir, k, max_pixels))
        else:
            found.append(PictureFile(note=f"{url}: file not found"))
    return found


def file_pictures(paths, out_dir, max_pixels=MAX_PICTURE_PIXELS):
    """A :class:`PictureFile` for each picture file of ``paths``, its thumbnail written into ``out_dir``."""
    return [_file_picture(path, out_dir, k, max_pixels) for k, path in enumerate(paths)]
