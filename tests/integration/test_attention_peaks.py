"""Where an attention model looks: on grid scenes, the map of a colour or shape word peaks on the shape it names.

A small rnn + soft attention model (a few seconds of training on 300 scenes of the built-in dataset on a 4 x 4 grid)
captions 200 validation scenes greedily; for each caption, one word that names a colour or shape of the scene
("red", "disc", "plus", ...) is drawn at random (seeded), and it is a hit when the argmax region of that step's
attention (the weights that chose the word) holds the named shape: the shape covers part of that region, by the
scene's own geometry (``captionkit.synthetic.grid_coverage``), not by anything the model computed.

The bound, and why. A peak placed without looking at the picture (any fixed region, or a random choice among
regions independent of the scene) hits with probability at most p0 = the largest, over the L regions, fraction of
trials whose shape covers that region: the best such placement is the region shapes cover most often (about 0.4
here: the centre cells, which large shapes often reach; the mean over regions is about 0.22). Scenes are drawn
independently and each caption gives one trial, so under that null the hit count is at most Binomial(n, p0).
The test asserts a hit rate of at least 1.5 p0 and a binomial tail probability, times L for having picked the best
of L regions after the fact, below 1e-6. Measured with these sizes: rates of 0.80 to 0.87 against p0 of 0.38 to
0.42 for four model seeds, tails below 1e-26.
"""
import json

import numpy as np
import pytest
from scipy import stats

from captionkit import CaptioningRNN, CaptioningSolver
from captionkit.data import load_coco_data
from captionkit.decoding import greedy_attention
from captionkit.synthetic import grid_coverage, named_object, write_bundle
from captionkit.synthetic.bundle import SCENES_FILE
from captionkit.synthetic.generate import generate_split
from captionkit.synthetic.scenes import IMAGE_SIZE, Scene, shape_mask
from captionkit.vocabulary import caption_words

GRID = 4


@pytest.mark.parametrize("grid", [3, 4, 7])
def test_grid_coverage_is_each_shapes_area_per_region(grid):
    """Oracle: the shape's inside-test sampled 16 x 16 times per pixel, each sample binned into the region whose
    cells the ``shapes`` encoder cuts there (pixel i spans [i - 0.5, i + 0.5] around its centre, as rendered)."""
    scenes = generate_split(np.random.default_rng(11), 8).scenes
    fine = 16
    points = (np.arange(IMAGE_SIZE * fine) + 0.5) / fine - 0.5  # sample positions, in pixel-centre coordinates
    region = np.minimum(((points + 0.5) // (IMAGE_SIZE / grid)).astype(int), grid - 1)
    checked = 0
    for scene in scenes:
        coverage = grid_coverage(scene, grid)
        assert coverage.shape == (len(scene.objects), grid * grid)
        for obj, computed in zip(scene.objects, coverage):
            inside = shape_mask(obj.shape, (points[None, :] - obj.cx) / obj.radius,
                                (points[:, None] - obj.cy) / obj.radius)
            expected = np.zeros((grid, grid))
            np.add.at(expected, (region[:, None].repeat(len(points), 1), region[None, :].repeat(len(points), 0)),
                      inside / fine**2)
            # The renderer's 4 x 4 samples a pixel against 16 x 16 differ along the outline only, by at most half a
            # sample step (1/8 pixel) per pixel of outline, and no outline is longer than 8 radii.
            np.testing.assert_allclose(computed, expected.ravel(), atol=obj.radius)
            assert abs(computed.sum() - expected.sum()) <= obj.radius
            checked += 1
    assert checked >= 12


@pytest.fixture(scope="module")
def grid_scenes(tmp_path_factory):
    """(data, validation scenes, a trained rnn + soft attention model) on 4 x 4 grid scenes."""
    bundle = write_bundle(tmp_path_factory.mktemp("peaks") / "grid", seed=7, num_train=300, num_val=200, grid=GRID)
    data = load_coco_data(bundle)
    scenes = [Scene.from_dict(s) for s in json.loads((bundle / SCENES_FILE).read_text())["val"]]
    model = CaptioningRNN(data["word_to_idx"], input_dim=512, wordvec_dim=32, hidden_dim=48, cell_type="rnn",
                          regions=GRID * GRID, attention="soft", attention_dim=32, seed=0, dtype=np.float32)
    CaptioningSolver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-2}, lr_decay=0.95,
                     batch_size=50, num_epochs=6, verbose=False, rng=np.random.RandomState(0)).train()
    return data, scenes, model


def test_attention_peaks_on_the_shape_a_word_names(grid_scenes):
    data, scenes, model = grid_scenes
    captions, weights = greedy_attention(model, data["val_features"], max_length=16)
    draw = np.random.default_rng(0)
    hits, held = [], []  # per trial: did the peak hit, and which regions hold the named shape
    for row, row_weights, scene in zip(captions, weights, scenes):
        coverage = grid_coverage(scene, GRID) > 0
        grounded = [(t, named_object(word, scene)) for t, word in caption_words(row, model.idx_to_word)]
        grounded = [(t, k) for t, k in grounded if k is not None]
        if not grounded:
            continue
        t, k = grounded[draw.integers(len(grounded))]
        hits.append(coverage[k, np.argmax(row_weights[t])])
        held.append(coverage[k])
    n, hit_count = len(hits), int(np.sum(hits))
    assert n >= 150, f"only {n} of {len(scenes)} captions name a colour or shape of their scene"
    p0 = float(np.mean(held, axis=0).max())  # the best placement that ignores the picture
    tail = stats.binom.sf(hit_count - 1, n, p0) * GRID * GRID
    summary = f"{hit_count}/{n} peaks on the named shape ({hit_count / n:.2f}); picture-blind best {p0:.2f}"
    assert hit_count / n >= 1.5 * p0, summary
    assert tail < 1e-6, f"{summary}; tail {tail:.2g}"
