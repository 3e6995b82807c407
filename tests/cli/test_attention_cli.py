"""From the command line: a grid bundle trains an attention model, the run records it, and `caption
--attention-maps` draws one panel per word of its caption with the weights the model used.

Oracles: the run's checkpoint read back (its spec and parameters), the model's own greedy_attention on the features
the recorded encoder gives the picture, the PNG's size from its panel layout.
"""
import numpy as np
from PIL import Image, ImageDraw

from captionkit.captioning import caption_images, load_captioner
from captionkit.decoding import greedy_attention
from training_helpers import run_cli


def _picture(path):
    picture = Image.new("RGB", (128, 128), (0, 0, 0))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((8, 8, 50, 50), fill=(220, 30, 30))
    draw.rectangle((80, 76, 120, 116), fill=(30, 60, 220))
    picture.save(path)
    return path


def test_attention_model_from_a_grid_bundle_to_attention_maps(tmp_path):
    bundle, run = tmp_path / "grid", tmp_path / "run"
    made = run_cli("data", "synth", bundle, "--grid", 2, "--num-train", 40, "--num-val", 8, "--seed", 3)
    assert made.exit_code == 0, made.output
    trained = run_cli("train", "--data", bundle, "--attention", "soft", "--attention-dim", 16, "--hidden-dim", 24,
                      "--wordvec-dim", 16, "--epochs", 2, "--batch-size", 20, "--eval-images", 8,
                      "--num-samples", 2, "--out", run, "--quiet")
    assert trained.exit_code == 0, trained.output
    model, _, pipeline = load_captioner(run)
    assert (model.spec.attention, model.spec.attention_dim, model.spec.feature_shape) == ("soft", 16, (4, 512))

    picture = _picture(tmp_path / "pic.png")
    maps = tmp_path / "maps.png"
    drawn = run_cli("caption", run, picture, "--attention-maps", maps)
    assert drawn.exit_code == 0, drawn.output
    [entry] = caption_images(run, [picture], return_attention=True)
    captions, weights = greedy_attention(model, pipeline.encode_files([picture]), max_length=20)
    assert entry["caption"] == drawn.output.split("\t")[1].splitlines()[0]
    steps = len(entry["words"])
    np.testing.assert_allclose(entry["attention"], weights[0, :steps], rtol=1e-6)
    np.testing.assert_allclose(entry["attention"].sum(axis=1), 1.0, rtol=1e-5)
    columns = min(5, steps)
    rows = -(-steps // columns)
    with Image.open(maps) as image:
        assert image.size == (240 * columns, 260 * rows)


def test_attention_maps_are_refused_clearly(tmp_path):
    bundle, run = tmp_path / "pooled", tmp_path / "run"
    assert run_cli("data", "synth", bundle, "--num-train", 20, "--num-val", 4, "--seed", 3).exit_code == 0
    trained = run_cli("train", "--data", bundle, "--hidden-dim", 8, "--wordvec-dim", 8, "--epochs", 1,
                      "--batch-size", 10, "--eval-images", 4, "--num-samples", 1, "--out", run, "--quiet")
    assert trained.exit_code == 0, trained.output
    picture = _picture(tmp_path / "pic.png")
    pooled = run_cli("caption", run, picture, "--attention-maps", tmp_path / "m.png")
    assert pooled.exit_code != 0 and "has no attention, so no attention maps" in pooled.output
    two = run_cli("caption", run, picture, picture, "--attention-maps", tmp_path / "m.png")
    assert two.exit_code != 0 and "--attention-maps draws the greedy caption of one picture" in two.output
    on_vectors = run_cli("train", "--data", bundle, "--attention", "soft", "--out", tmp_path / "r")
    assert on_vectors.exit_code != 0 and "reads a grid of image regions" in on_vectors.output
