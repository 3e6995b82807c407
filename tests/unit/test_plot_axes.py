"""captionkit.plotting: score axes read plainly and the caption grid has no wide empty bands.

The checks go through matplotlib's own objects (tick labels, offset text, limits, text extents) of the Figure each
function returns; a figure drawn with matplotlib's defaults on the same numbers is the oracle that they would
otherwise show an offset label.
"""
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from captionkit.comparison import RunReport  # noqa: E402
from captionkit.plotting import _figure, plot_caption_grid, plot_comparison, plot_training_curves  # noqa: E402

NEAR_ONE = [1 - 1e-10 * k for k in range(5, 0, -1)]  # a model that reproduces its references: BLEU at 0.9999999999
CIDER = [9.99 + 0.0002 * k for k in range(5)]


def records():
    train = [{"kind": "train", "iteration": i, "loss": 30.0 / i} for i in range(1, 51)]
    val = [{"kind": "val", "iteration": 10 * (k + 1), "loss": 3.0 - 0.1 * k, "BLEU-1": score, "BLEU-4": score,
            "ROUGE-L": score, "CIDEr-D": cider} for k, (score, cider) in enumerate(zip(NEAR_ONE, CIDER))]
    return train + val


def drawn(figure):
    figure.canvas.draw()
    return figure


def labels(axes):
    return [tick.get_text() for tick in axes.get_yticklabels()]


def test_matplotlib_alone_labels_these_scores_with_an_offset():
    figure = _figure(4, 3)
    bounded, cider = figure.subplots(1, 2)
    bounded.plot(range(5), NEAR_ONE)
    cider.plot(range(5), CIDER)
    drawn(figure)
    assert bounded.yaxis.get_offset_text().get_text() != "" and cider.yaxis.get_offset_text().get_text() != ""


def test_training_curves_show_bounded_scores_on_0_to_1_with_plain_labels(tmp_path):
    figure = drawn(plot_training_curves(records(), tmp_path / "loss.png"))
    loss_axes, val_axes, cider_axes = figure.axes
    assert val_axes.get_ylabel() == "BLEU, ROUGE-L" and cider_axes.get_ylabel() == "CIDEr-D"
    assert val_axes.get_ylim() == (0, 1)
    assert labels(val_axes) == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    bottom, top = cider_axes.get_ylim()
    assert bottom == 0 and top >= max(CIDER)  # not bounded by 1
    for axes in (val_axes, cider_axes):
        assert axes.yaxis.get_offset_text().get_text() == ""
        assert all("e" not in label and "+" not in label for label in labels(axes))
    assert [float(label) for label in labels(cider_axes)] == pytest.approx(list(cider_axes.get_yticks()))
    assert (tmp_path / "loss.png").stat().st_size > 0


@pytest.mark.parametrize("metric, bounded", [("BLEU-4", True), ("ROUGE-L", True), ("CIDEr-D", False),
                                              ("loss", False)])
def test_comparison_bounds_only_the_scores_bounded_by_one(tmp_path, metric, bounded):
    val = [r for r in records() if r["kind"] == "val"]
    report = RunReport(name="run", path=tmp_path, config={}, summary={}, train=[(1, 3.0), (2, 2.0)], val=val,
                       skipped=0)
    figure = drawn(plot_comparison([report], metric, tmp_path / "compare.png"))
    metric_axes = figure.axes[1]
    assert metric_axes.yaxis.get_offset_text().get_text() == ""
    bottom, top = metric_axes.get_ylim()
    assert bottom == 0
    assert (top == 1) if bounded else (top >= max(r[metric] for r in val))


def blank_bands(figure):
    """The heights in pixels of the runs of pure white rows in the rendered figure."""
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    blank = (pixels == 255).all(axis=(1, 2))
    runs, length = [], 0
    for row_is_blank in blank:
        if row_is_blank:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs + ([length] if length else [])


@pytest.mark.parametrize("references", [True, False])
def test_the_caption_grid_is_tight_and_no_title_covers_a_picture(tmp_path, references):
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 255, size=(64, 64, 3)).astype(np.uint8) for _ in range(10)]
    captions = ["a small red circle above a large blue square on the left of a green triangle"] * 10
    figure = drawn(plot_caption_grid(images, captions, captions if references else None, tmp_path / "grid.png"))
    renderer = figure.canvas.get_renderer()
    assert len(figure.axes) == 10
    page = figure.bbox
    pictures = [ax.get_window_extent(renderer) for ax in figure.axes]
    for ax, picture in zip(figure.axes, pictures):
        title = ax.title.get_window_extent(renderer)
        assert page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1  # inside the page
        assert title.y0 >= picture.y1 - 1  # above its own picture
        assert not any(title.overlaps(other) for other in pictures)
    # The only white bands are the margins and the space between a picture and the next row's title: a few tenths
    # of an inch (the old layout left bands of 0.3 inch without references and 0.66 inch with them).
    dpi = figure.dpi
    assert max(blank_bands(figure)) <= 0.25 * dpi
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_the_caption_grid_names_each_picture_under_it_as_plain_text(tmp_path):
    images = [np.zeros((64, 64, 3), np.uint8) for _ in range(3)]
    names = ["cost $5$ and $6$.png", "two\nlines.png", "a-very-long-holiday-photo-name-" * 4 + "end.jpg"]
    figure = drawn(plot_caption_grid(images, ["a caption"] * 3, None, tmp_path / "grid.png", columns=2, names=names))
    renderer = figure.canvas.get_renderer()
    texts = figure.texts
    assert [t.get_text() for t in texts[:2]] == ["cost $5$ and $6$.png", "two lines.png"]  # no formula, one line
    long_name = texts[2].get_text()
    assert len(long_name) == 48 and long_name.startswith("a-very-long") and long_name.endswith("end.jpg")
    for ax, text in zip(figure.axes, texts):
        picture, name = ax.get_window_extent(renderer), text.get_window_extent(renderer)
        assert name.y1 <= picture.y0 and name.x0 >= picture.x0 - 1  # under its own picture, from its left edge
        assert figure.bbox.y0 <= name.y0 and name.x1 <= figure.bbox.x1  # inside the page
        assert not any(name.overlaps(other.get_window_extent(renderer)) for other in figure.axes)


def test_the_comparison_leaves_out_scst_training_loss_and_says_so(tmp_path):
    val = [{"kind": "val", "iteration": 10, "loss": 3.0, "CIDEr-D": 0.5}]
    xe = RunReport(name="xe", path=tmp_path, config={"objective": "xe"}, summary={}, train=[(1, 3.0), (2, 2.0)],
                   val=val)
    scst = RunReport(name="sc", path=tmp_path, config={"objective": "scst"}, summary={},
                     train=[(1, -8.0), (2, -6.5)], val=val)
    figure = drawn(plot_comparison([xe, scst], "CIDEr-D", tmp_path / "compare.png"))
    loss_axes = figure.axes[0]
    assert [line.get_label() for line in loss_axes.get_lines()] == ["xe train", "xe val", "sc val"]
    assert [t.get_text() for t in loss_axes.get_legend().get_texts()] == ["xe train", "xe val", "sc val"]
    assert "not drawn: the SCST training loss of sc" in loss_axes.get_title()
    alone = drawn(plot_comparison([xe], "CIDEr-D", tmp_path / "xe.png"))
    assert "not drawn" not in alone.axes[0].get_title()
