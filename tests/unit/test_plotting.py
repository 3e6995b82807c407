"""captionkit.plotting: the run's loss curves, the comparison of runs and the caption grid, as PNG files.

Oracles: the PNG files read back with Pillow (their size in pixels is the figure's inches times 100 dpi; a picture
drawn in the grid leaves its colour in the file), the folder's listing (files replaced atomically leave no
temporary behind), and the messages of refused input.
"""
import numpy as np
import pytest
from PIL import Image

from captionkit.comparison import RunReport
from captionkit.plotting import plot_caption_grid, plot_comparison, plot_training_curves

RECORDS = [{"kind": "train", "iteration": i, "loss": 5.0 / i} for i in range(1, 121)] + \
    [{"kind": "val", "iteration": i, "loss": 4.0 / i ** 0.5, "BLEU-1": 0.1 * i / 30, "CIDEr-D": 0.5 * i / 30}
     for i in (30, 60, 90, 120)]


def read_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_training_curves_are_drawn_into_one_png(tmp_path):
    path = tmp_path / "loss.png"
    plot_training_curves(RECORDS, path)
    pixels = read_png(path)
    assert pixels.shape == (460, 1100, 3) and pixels.std() > 10  # something is drawn on the white canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]
    plot_training_curves([r for r in RECORDS if r["kind"] == "train"][:3], path)  # no validation yet, few points
    assert read_png(path).shape == (460, 1100, 3)


def test_runs_are_compared_side_by_side(tmp_path):
    reports = [RunReport(name=f"run{k}", path=tmp_path, config={}, summary={},
                         train=[(r["iteration"], r["loss"] * (k + 1)) for r in RECORDS if r["kind"] == "train"],
                         val=[r for r in RECORDS if r["kind"] == "val"]) for k in range(3)]
    reports.append(RunReport(name="empty", path=tmp_path, config={}, summary={}))  # a run with no records yet
    plot_comparison(reports, "CIDEr-D", tmp_path / "compare.png")
    assert read_png(tmp_path / "compare.png").shape == (480, 1100, 3)


def test_the_caption_grid_shows_each_picture(tmp_path):
    red = np.zeros((32, 48, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((200, 150, 3), np.uint8)  # sizes may differ
    blue[..., 2] = 255
    plot_caption_grid([red, blue, red], ["a red box", "", "a red box again " * 6], ["gt one", "gt two", "gt three"],
                      tmp_path / "grid.png", columns=2)
    pixels = read_png(tmp_path / "grid.png").astype(int)
    # Rows as tall as the tallest picture (the blue one, 3 in wide: 4 in) under the longest title (four lines of
    # 0.13 in and a 0.056 in pad), 0.15 in apart and from the edges; columns 3 in wide -> 2 * 4.726 + 0.15 in by
    # 2 * 3.15 + 0.15 in at 100 dpi.
    assert pixels.shape == (960, 645, 3)
    pixels_of = {colour: np.all(pixels == colour, axis=-1).sum() for colour in ((255, 0, 0), (0, 0, 255))}
    assert pixels_of[(255, 0, 0)] > 1000 and pixels_of[(0, 0, 255)] > 1000
    plot_caption_grid([blue], ["only"], None, tmp_path / "one.png", columns=4)  # columns never exceed the images
    assert read_png(tmp_path / "one.png").shape == (448, 330, 3)  # one title line: 0.186 + 4 + 2 * 0.15 in


def test_a_grid_with_captions_missing_is_refused_naming_the_counts(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"need one caption \(and one reference and one name, if any\) per image, "
                                         r"got 2 images, 1 captions, no references and no names"):
        plot_caption_grid([image, image], ["one"], None, tmp_path / "grid.png")
    with pytest.raises(ValueError, match=r"got 1 images, 1 captions, 3 references and no names"):
        plot_caption_grid([image], ["one"], ["a", "b", "c"], tmp_path / "grid.png")
    with pytest.raises(ValueError, match=r"got 1 images, 1 captions, no references and 2 names"):
        plot_caption_grid([image], ["one"], None, tmp_path / "grid.png", names=["a.png", "b.png"])
    assert list(tmp_path.iterdir()) == []
