"""Reading picture files: modes and formats to 8-bit RGB, EXIF orientation, walking folders, resizing, and errors
that name the file."""
import numpy as np
import pytest
from PIL import Image

from captionkit.images import ImageFileError, crop_to, find_images, read_image, resize


def rgb(height=6, width=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_png_round_trip_and_modes(tmp_path):
    pixels = rgb()
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), pixels)

    grey = pixels[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))

    deep = (grey.astype(np.uint16) * 257)  # 16-bit greyscale: the top 8 bits are the 8-bit value
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[..., 0], grey)

    rgba = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 255, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), pixels)

    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.gif")
    assert read_image(tmp_path / "palette.gif").shape == (6, 4, 3)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "phone.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "gone.png", r"gone\.png: file not found"),
    (lambda d: d, r": not a file"),
    (lambda d: _write(d / "text.jpg", b"hello"), r"text\.jpg: not an image Pillow can read"),
    (lambda d: _truncated(d / "cut.png"), r"cut\.png: cannot read image"),
])
def test_unreadable_files_are_named(tmp_path, make, message):
    with pytest.raises(ImageFileError, match=message):
        read_image(make(tmp_path))


def _write(path, content):
    path.write_bytes(content)
    return path


def _truncated(path):
    Image.fromarray(rgb(64, 64)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    return path


def test_folders_are_walked_in_order_for_image_files(tmp_path):
    for name in ("b.jpg", "a.PNG", "sub/c.webp", "sub/.hidden.png", ".secret/d.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])] == ["a.PNG", "b.jpg", "sub/c.webp"]
    # A file named explicitly is taken whatever its suffix; order is kept.
    assert find_images([tmp_path / "notes.txt", tmp_path / "b.jpg"]) == [tmp_path / "notes.txt", tmp_path / "b.jpg"]
    with pytest.raises(ImageFileError, match="nowhere: file not found"):
        find_images([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFileError, match="empty: a directory with no image files"):
        find_images([tmp_path / "empty"])


def test_resize_and_crop():
    pattern = rgb(8, 12)
    doubled = np.repeat(np.repeat(pattern, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(resize(doubled, 8, 12), pattern)  # area averaging undoes repetition
    assert resize(pattern, 8, 12) is pattern
    np.testing.assert_array_equal(crop_to(doubled, 8, 8), pattern[:, 2:10])  # cover 8x8, cut the centre
    assert crop_to(pattern, 30, 20).shape == (30, 20, 3)  # enlarged to cover, then cut
    assert crop_to(rgb(1, 300), 5, 5).shape == (5, 5, 3)
