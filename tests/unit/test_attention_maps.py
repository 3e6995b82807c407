"""Attention maps (captionkit.plotting.attention_overlay / plot_attention_maps): the light falls where the weights
are, on the region the grid puts them in."""
import numpy as np
import pytest
from PIL import Image

from captionkit.plotting import attention_overlay, plot_attention_maps


@pytest.mark.parametrize("region", [0, 5, 13, 48])
def test_the_brightest_pixels_lie_in_the_attended_region(region):
    picture = np.full((140, 210, 3), 200, dtype=np.uint8)  # 7 x 7 regions of 20 x 30 pixels
    weights = np.full(49, 0.01)
    weights[region] = 1.0
    lit = attention_overlay(picture, weights / weights.sum(), (7, 7)).astype(float).mean(axis=2)
    row, column = divmod(region, 7)
    y, x = np.unravel_index(lit.argmax(), lit.shape)
    assert (y // 20, x // 30) == (row, column)
    inside = lit[row * 20:(row + 1) * 20, column * 30:(column + 1) * 30].mean()
    assert inside > 2 * np.delete(lit.reshape(7, 20, 7, 30).mean(axis=(1, 3)).ravel(), region).mean()
    assert lit.max() <= 200 and lit.min() >= 0.25 * 200 - 1  # dimmed, never brighter than the picture


def test_uniform_weights_leave_the_picture_as_it_is():
    picture = np.random.RandomState(0).randint(0, 256, size=(30, 40, 3)).astype(np.uint8)
    np.testing.assert_allclose(attention_overlay(picture, np.full(4, 0.25), (2, 2)), picture, atol=1)


def test_maps_are_drawn_one_panel_per_word(tmp_path):
    picture = np.full((64, 64, 3), 180, dtype=np.uint8)
    weights = np.eye(4)[[0, 3, 1]]
    path = tmp_path / "maps.png"
    plot_attention_maps(picture, ["a", "red", "circle"], weights, (2, 2), path)
    with Image.open(path) as image:
        assert image.size == (3 * 240, 260)
    with pytest.raises(ValueError, match="weights must have shape \\(4,\\)"):
        attention_overlay(picture, np.ones(5), (2, 2))
    with pytest.raises(ValueError, match="one row of weights per word"):
        plot_attention_maps(picture, ["a"], weights, (2, 2), path)
