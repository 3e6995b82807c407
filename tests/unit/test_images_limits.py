"""Pictures that cost more than they should (issue #23 items 1, 2, 5): refused from their header before decoding,
decoded at a reduced scale where the encoder allows, and corrupt files reported as unreadable, never a crash.

The bombs are small files made here: a JPEG whose header declares 9000x9000, PNGs of 144 and 400 megapixels of one
colour, a GIF declaring 60000x60000, and a fuzz of small valid pictures.
"""
import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image

from captionkit.encoders.pipeline import encode_files
from captionkit.encoders.shapes import ShapesEncoder
from captionkit.images import MAX_PICTURE_PIXELS, ImageFileError, read_image, resize


def jpeg_declaring(path, width, height):
    """An 8x8 JPEG whose frame header (SOF0) is rewritten to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def gif_declaring(path, width, height):
    """A GIF whose screen and only frame declare ``width`` x ``height`` (one LZW block of a few pixels)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    path.write_bytes(screen + frame + b"\x3b")
    return path


def one_colour_png(path, width, height):
    Image.new("1", (width, height)).save(path)
    return path


def test_a_small_jpeg_declaring_9000x9000_is_refused_from_its_header(tmp_path):
    bomb = jpeg_declaring(tmp_path / "bomb.jpg", 9000, 9000)
    assert bomb.stat().st_size < 1000
    with pytest.raises(ImageFileError, match=r"bomb\.jpg: picture too large \(9000 x 9000 > 67,108,864 pixels"):
        read_image(bomb)


def test_a_144_megapixel_png_is_refused_without_pillows_warning(tmp_path):
    bomb = one_colour_png(tmp_path / "big.png", 12000, 12000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageFileError, match=r"big\.png: picture too large \(12000 x 12000 > 67,108,864"):
            read_image(bomb)
    assert caught == []
    # Under a raised limit the same picture is read (as Pillow allows up to its own hard limit).
    assert read_image(bomb, max_pixels=12000 * 12000).shape == (12000, 12000, 3)


@pytest.mark.parametrize("make", [lambda p: one_colour_png(p / "huge.png", 20000, 20000),
                                  lambda p: gif_declaring(p / "huge.gif", 60000, 60000)])
def test_pictures_over_pillows_own_limit_are_too_large_whatever_the_option(tmp_path, make):
    bomb = make(tmp_path)
    with pytest.raises(ImageFileError, match=rf"{bomb.name}: picture too large"):
        read_image(bomb)
    with pytest.raises(ImageFileError, match=rf"{bomb.name}: picture too large"):
        read_image(bomb, max_pixels=10 ** 12)


def _valid_pictures():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    files = {}
    for format_name in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format_name)
        files[format_name] = buffer.getvalue()
    return files


@pytest.mark.parametrize("format_name, data", sorted(_valid_pictures().items()))
def test_fuzzed_pictures_are_read_or_reported_unreadable(tmp_path, format_name, data):
    rng = np.random.default_rng(len(data))
    path = tmp_path / f"fuzz.{format_name.lower()}"
    outcomes = set()
    for _ in range(150):
        mutated = bytearray(data)
        for position in rng.integers(0, len(data), rng.integers(1, 12)):
            mutated[position] = rng.integers(0, 256)
        if rng.random() < 0.3:
            mutated = mutated[:rng.integers(1, len(mutated))]
        path.write_bytes(bytes(mutated))
        try:
            picture = read_image(path)
        except ImageFileError as exc:
            assert str(exc).startswith(f"{path}: ")
            outcomes.add("refused")
        else:
            assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
            outcomes.add("read")
    assert "refused" in outcomes


def test_a_jpeg_is_decoded_at_the_smallest_scale_covering_the_encoders_size(tmp_path):
    rows, cols = np.mgrid[0:768, 0:1024]
    smooth = np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    full = read_image(path)
    assert full.shape == (768, 1024, 3)
    reduced = read_image(path, decode_size=(64, 64))
    assert reduced.shape == (96, 128, 3)  # 1/8, the smallest JPEG scale, still covers 64x64
    assert read_image(path, decode_size=(200, 100)).shape == (384, 512, 3)  # 1/2: 1/4 (192) would not cover 200
    # The reduced decode is the full picture averaged down, to JPEG's rounding.
    assert np.abs(reduced.astype(int) - resize(full, 96, 128).astype(int)).mean() < 3


def test_a_batch_holds_model_sized_pictures_only(tmp_path):
    paths = []
    for k in range(5):
        path = tmp_path / f"p{k}.png"
        Image.fromarray(np.full((300 + k, 200, 3), 40 * k, np.uint8)).save(path)
        paths.append(path)
    seen = []

    class Recording(ShapesEncoder):
        def encode(self, images):
            seen.extend(image.shape for image in images)
            return super().encode(images)

    features = encode_files(Recording(), paths)
    assert seen == [(64, 64, 3)] * 5
    np.testing.assert_array_equal(features, ShapesEncoder().encode([read_image(p) for p in paths]))
    assert MAX_PICTURE_PIXELS == 8192 * 8192
