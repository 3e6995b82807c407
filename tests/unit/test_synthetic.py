"""The built-in synthetic dataset: layout, determinism, grounded captions, disjoint splits, features, caching, CLI."""
import colorsys
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial import ConvexHull

from captionkit.cli import main
from captionkit.data import load_coco_data
from captionkit.synthetic import bundle, builtin_dataset_dir, extract_features, write_bundle
from captionkit.synthetic.features import FEATURE_DIM, describe, pool
from captionkit.synthetic.generate import generate_split
from captionkit.synthetic.grammar import is_true, sample_captions
from captionkit.synthetic.scenes import Scene, SceneObject, render_scene, sample_scene

NUM_TRAIN, NUM_VAL, SEED = 40, 12, 7
COLOUR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "white")
SHAPE_NOUNS = {"circle": "circle", "disc": "circle", "square": "square", "triangle": "triangle",
               "diamond": "diamond", "cross": "cross", "plus": "cross"}
SIZE_ADJECTIVES = {"small": "small", "little": "small", "large": "large", "big": "large"}


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    return write_bundle(tmp_path_factory.mktemp("synth") / "bundle", seed=SEED, num_train=NUM_TRAIN, num_val=NUM_VAL)


def read_h5(path):
    with h5py.File(path, "r") as f:
        return {key: f[key][()] for key in f}


def caption_words(row, idx_to_word):
    """Words of one encoded caption, between <START> and <END>."""
    words = [idx_to_word[i] for i in row]
    return words[1:words.index("<END>")]


# ---------------------------------------------------------------- layout

def test_bundle_has_exactly_the_coco_layout(small_bundle):
    expected = {
        "captions.h5", "vocab.json", "train_urls.txt", "val_urls.txt", "train_features.h5", "val_features.h5",
        "train_images.h5", "val_images.h5", "encoder.json", "synthetic_scenes.json",
    }
    assert {p.name for p in small_bundle.iterdir()} == expected

    captions = read_h5(small_bundle / "captions.h5")
    assert set(captions) == {"train_captions", "train_image_idxs", "val_captions", "val_image_idxs"}
    for split, num_images in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        assert captions[f"{split}_captions"].dtype == np.int32
        assert captions[f"{split}_captions"].shape == (5 * num_images, 17)
        assert captions[f"{split}_image_idxs"].dtype == np.int32
        assert captions[f"{split}_image_idxs"].shape == (5 * num_images,)
        assert np.array_equal(np.bincount(captions[f"{split}_image_idxs"]), np.full(num_images, 5))
        features = read_h5(small_bundle / f"{split}_features.h5")
        assert list(features) == ["features"]
        assert features["features"].dtype == np.float32 and features["features"].shape == (num_images, FEATURE_DIM)
        images = read_h5(small_bundle / f"{split}_images.h5")
        assert list(images) == ["images"]
        assert images["images"].dtype == np.uint8 and images["images"].shape == (num_images, 64, 64, 3)
        urls = (small_bundle / f"{split}_urls.txt").read_text().splitlines()
        assert urls == [f"synthetic://{split}/{i:06d}" for i in range(num_images)]
    assert FEATURE_DIM == 512

    vocab = json.loads((small_bundle / "vocab.json").read_text())
    assert set(vocab) == {"idx_to_word", "word_to_idx"}
    assert vocab["idx_to_word"][:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    assert all(vocab["word_to_idx"][w] == i for i, w in enumerate(vocab["idx_to_word"]))
    assert 30 <= len(vocab["idx_to_word"]) <= 104

    record = json.loads((small_bundle / "encoder.json").read_text())
    assert (record["encoder"], record["output_dim"], record["pca_dim"]) == ("shapes", FEATURE_DIM, None)


def test_bundle_loads_through_the_common_loader(small_bundle):
    data = load_coco_data(small_bundle)
    assert data["train_features"].shape == (NUM_TRAIN, 512)
    assert data["val_captions"].shape == (5 * NUM_VAL, 17)
    # The features are the shapes encoder's, from the pixels the bundle keeps: the fixed pooling of the raw
    # descriptor, as COCO's PCA features are a fixed projection of fc7.
    pixels = read_h5(small_bundle / "val_images.h5")["images"]
    np.testing.assert_array_equal(data["val_features"], pool(describe(pixels)))
    # Without PCA features in the bundle, asking for the full ones gives the same.
    np.testing.assert_array_equal(load_coco_data(small_bundle, pca_features=False)["val_features"],
                                  data["val_features"])


def test_captions_are_well_formed(small_bundle):
    data = load_coco_data(small_bundle)
    for split in ("train", "val"):
        captions = data[f"{split}_captions"]
        assert (captions[:, 0] == 1).all()
        assert ((captions == 2).sum(axis=1) == 1).all()
        end = np.argmax(captions == 2, axis=1)
        assert (end - 1 <= 15).all() and (end - 1 >= 1).all()
        after_end = np.arange(17)[None, :] > end[:, None]
        assert (captions[after_end] == 0).all()
        words = captions[~after_end & (np.arange(17)[None, :] < end[:, None]) & (np.arange(17)[None, :] > 0)]
        assert (words >= 4).all()  # neither <UNK> nor a stray special token inside a caption
        for image in range(data[f"{split}_features"].shape[0]):
            rows = captions[data[f"{split}_image_idxs"] == image]
            assert len({tuple(row) for row in rows}) == 5  # five different captions per image


# ---------------------------------------------------------------- determinism and disjointness

def digest_files(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_same_seed_gives_identical_bytes(small_bundle, tmp_path):
    again = write_bundle(tmp_path / "again", seed=SEED, num_train=NUM_TRAIN, num_val=NUM_VAL)
    assert digest_files(again) == digest_files(small_bundle)


def test_other_seed_gives_other_data(small_bundle, tmp_path):
    other = write_bundle(tmp_path / "other", seed=SEED + 1, num_train=NUM_TRAIN, num_val=NUM_VAL)
    for name in ("train_images.h5", "captions.h5", "val_features.h5"):
        assert digest_files(other)[name] != digest_files(small_bundle)[name]


def test_train_and_val_images_are_disjoint(small_bundle):
    train = read_h5(small_bundle / "train_images.h5")["images"]
    val = read_h5(small_bundle / "val_images.h5")["images"]
    train_digests = {image.tobytes() for image in train}
    assert len(train_digests) == NUM_TRAIN
    assert not train_digests & {image.tobytes() for image in val}
    scenes = json.loads((small_bundle / "synthetic_scenes.json").read_text())
    as_keys = [{json.dumps(scene, sort_keys=True) for scene in scenes[split]} for split in ("train", "val")]
    assert not as_keys[0] & as_keys[1]


def test_generate_split_redraws_excluded_images():
    first = generate_split(np.random.default_rng(3), 6)
    from captionkit.synthetic.generate import image_digest

    # The same generator state would draw the same six images; excluding them forces six new ones.
    second = generate_split(np.random.default_rng(3), 6, exclude={image_digest(im) for im in first.images})
    assert not {im.tobytes() for im in first.images} & {im.tobytes() for im in second.images}


# ---------------------------------------------------------------- grounding, checked against the pixels

def pixel_objects(image):
    """{colour word: (shape, size class)} read off the pixels alone: hue, box fill, convexity, mass distribution."""
    rgb = image.astype(np.float64) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*px) for px in rgb.reshape(-1, 3)]).reshape(64, 64, 3)
    hue, sat, val = hsv[..., 0] * 360, hsv[..., 1], hsv[..., 2]
    background = np.median(val)
    lit = val > background + 0.15
    candidates = {
        "white": lit & (sat < 0.2),
        "red": lit & (sat > 0.4) & ((hue < 15) | (hue > 345)),
        "orange": lit & (sat > 0.4) & (hue >= 15) & (hue < 45),
        "yellow": lit & (sat > 0.4) & (hue >= 45) & (hue < 75),
        "green": lit & (sat > 0.4) & (hue >= 90) & (hue < 150),
        "blue": lit & (sat > 0.4) & (hue >= 210) & (hue < 255),
        "purple": lit & (sat > 0.4) & (hue >= 255) & (hue < 300),
    }
    objects = {}
    for colour, candidate in candidates.items():
        if candidate.sum() < 20:
            continue
        full = np.percentile(val[candidate], 90)
        mask = candidate & (val - background >= 0.5 * (full - background))  # pixels at least half covered
        rows, cols = np.nonzero(mask)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        fill = mask.sum() / (height * width)
        corners = np.concatenate([np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)])
        solidity = mask.sum() / ConvexHull(corners).volume  # pixel area over the area of its convex hull
        mid_row = (rows.min() + rows.max()) / 2
        if fill >= 0.88:
            shape = "square"
        elif fill >= 0.7:
            shape = "circle"
        elif solidity < 0.8:
            shape = "cross"  # the only shape that is not convex
        elif (rows > mid_row).sum() > 1.4 * (rows < mid_row).sum():
            shape = "triangle"  # mass sits on its base
        else:
            shape = "diamond"
        objects[colour] = (shape, "large" if mask.sum() > 160 else "small")
    return objects


def described_objects(words):
    """[(colour, shape, size or None)] for each noun phrase ("a [size] colour shape") in a caption."""
    found = []
    for i, word in enumerate(words):
        if word in SHAPE_NOUNS:
            assert i >= 1 and words[i - 1] in COLOUR_WORDS, words
            size = SIZE_ADJECTIVES.get(words[i - 2]) if i >= 2 else None
            found.append((words[i - 1], SHAPE_NOUNS[word], size))
    return found


def test_captions_are_true_of_the_pixels(small_bundle):
    data = load_coco_data(small_bundle)
    images = read_h5(small_bundle / "train_images.h5")["images"]
    objects_by_image = [pixel_objects(image) for image in images]
    assert sum(len(objs) for objs in objects_by_image) > NUM_TRAIN  # the oracle sees multi-object scenes
    large_shapes_checked = 0
    for row, image_idx in zip(data["train_captions"], data["train_image_idxs"]):
        words = caption_words(row, data["idx_to_word"])
        pixels = objects_by_image[image_idx]
        described = described_objects(words)
        # Every caption names every object, each with its true colour, size (when given) and shape. The pixel
        # oracle reads shapes reliably only when they are large: a small one spans 8 to 13 pixels.
        assert sorted(colour for colour, _, _ in described) == sorted(pixels), (words, pixels)
        for colour, shape, size in described:
            assert size in (None, pixels[colour][1]), (words, pixels)
            if pixels[colour][1] == "large":
                assert pixels[colour][0] == shape, (words, pixels)
                large_shapes_checked += 1
    assert large_shapes_checked > NUM_TRAIN


def test_objects_differ_in_colour_and_shape(small_bundle):
    images = read_h5(small_bundle / "val_images.h5")["images"]
    scenes = json.loads((small_bundle / "synthetic_scenes.json").read_text())["val"]
    for image, scene in zip(images, scenes):
        shapes = [obj["shape"] for obj in scene["objects"]]
        assert len(set(shapes)) == len(shapes)
        assert len(pixel_objects(image)) == len(shapes)  # colours read off the pixels are all different too


def test_layouts_keep_their_margins():
    rng = np.random.default_rng(4)
    for _ in range(300):
        boxes = [obj.box for obj in sample_scene(rng).objects]
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            assert x0 >= 1 and y0 >= 1 and x1 <= 62 and y1 <= 62
            for ox0, oy0, ox1, oy1 in boxes[i + 1:]:
                gap_x, gap_y = max(ox0 - x1, x0 - ox1), max(oy0 - y1, y0 - oy1)
                assert max(gap_x, gap_y) >= 4 and abs(gap_x) >= 4 and abs(gap_y) >= 4


def test_scene_descriptions_match_captions(small_bundle):
    data = load_coco_data(small_bundle)
    scenes = json.loads((small_bundle / "synthetic_scenes.json").read_text())
    assert scenes["seed"] == SEED and scenes["version"] == bundle.GENERATOR_VERSION
    for split in ("train", "val"):
        for row, image_idx in zip(data[f"{split}_captions"], data[f"{split}_image_idxs"]):
            assert is_true(caption_words(row, data["idx_to_word"]), Scene.from_dict(scenes[split][image_idx]))


def two_objects(left_shape="circle", right_shape="square"):
    return Scene(objects=(SceneObject(left_shape, "red", "small", 14.0, 32.0, 5.0),
                          SceneObject(right_shape, "blue", "large", 46.0, 32.0, 12.0)), background=30)


def test_truth_check_rejects_false_captions():
    scene = two_objects()
    assert is_true("a small red circle to the left of a big blue square".split(), scene)
    assert is_true("a blue square is next to a red disc".split(), scene)
    assert not is_true("a small red circle to the right of a big blue square".split(), scene)
    assert not is_true("a small red circle above a big blue square".split(), scene)
    assert not is_true("a large red circle to the left of a big blue square".split(), scene)
    assert not is_true("a small green circle to the left of a big blue square".split(), scene)
    assert not is_true("a small red square to the left of a big blue square".split(), scene)
    assert not is_true("a small red circle".split(), scene)  # incomplete: the square is not mentioned
    assert not is_true("a small red circle to the left of".split(), scene)


def test_truth_check_accepts_any_mention_order():
    # The dataset always names red before blue; a caption naming blue first is just as true.
    scene = two_objects()
    assert is_true("a big blue square to the right of a small red circle".split(), scene)
    assert is_true("a blue square and a red circle".split(), scene)


def test_captions_name_objects_in_colour_order():
    scene = Scene(objects=(SceneObject("square", "white", "large", 46.0, 20.0, 12.0),
                           SceneObject("circle", "blue", "small", 14.0, 20.0, 5.0),
                           SceneObject("triangle", "red", "small", 30.0, 50.0, 5.0)), background=30)
    captions = sample_captions(scene, np.random.default_rng(0), count=20)
    for caption in captions:
        assert is_true(caption, scene)
        assert [word for word in caption if word in COLOUR_WORDS] == ["red", "blue", "white"], caption


# ---------------------------------------------------------------- features

def test_features_are_finite_float32_and_deterministic():
    split = generate_split(np.random.default_rng(11), 20)
    features = extract_features(split.images)
    assert features.dtype == np.float32 and features.shape == (20, 512)
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(extract_features(split.images), features)
    assert len({row.tobytes() for row in features}) == 20


def test_features_tell_apart_colour_shape_size_and_position():
    rng = np.random.default_rng(0)
    base = SceneObject("circle", "red", "small", 20.0, 20.0, 5.5)
    variants = [SceneObject("circle", "green", "small", 20.0, 20.0, 5.5),
                SceneObject("square", "red", "small", 20.0, 20.0, 5.5),
                SceneObject("circle", "red", "large", 20.0, 20.0, 12.0),
                SceneObject("circle", "red", "small", 44.0, 40.0, 5.5)]
    # Re-rendering the same object changes only the noise and colour jitter.
    twins = [render_scene(Scene(objects=(base,), background=30), rng) for _ in range(6)]
    changed = [render_scene(Scene(objects=(obj,), background=30), rng) for obj in variants]
    features = extract_features(np.stack(twins + changed))
    twin_spread = max(np.linalg.norm(features[i] - features[0]) for i in range(1, 6))
    for variant in features[6:]:
        assert np.linalg.norm(variant - features[0]) > 2 * twin_spread


def test_context_features_say_where_the_other_objects_are():
    from captionkit.synthetic import features

    def channel(colour):  # the hue channel a lone object of this colour lands in
        image = render_scene(Scene(objects=(SceneObject("circle", colour, "small", 30.0, 30.0, 5.0),), background=30),
                             np.random.default_rng(0))
        return int(features.colour_maps(image[None])[1][0]) % features.NUM_CHANNELS

    scene = Scene(objects=(SceneObject("circle", "red", "small", 14.0, 20.0, 5.0),
                           SceneObject("square", "blue", "small", 46.0, 20.0, 5.0)), background=30)
    pooled = extract_features(render_scene(scene, np.random.default_rng(0))[None])[0]
    offset = (2 * features.POOLED_GRID + 2 + len(features.SIZE_CENTRES) + len(features.FILL_CENTRES)
              + len(features.CROSS_MOMENT_CENTRES))

    def context(colour):  # (left, right, above, below) shares of the other objects, unscaled
        start = channel(colour) * features.CHANNEL_POOLED_DIM + offset
        return pooled[start:start + 4] / features.POSITION_SCALE

    red_left, red_right, red_above, red_below = context("red")
    blue_left, blue_right, blue_above, blue_below = context("blue")
    assert red_right > 0.7 and blue_left > 0.7  # each sees the other on its side ...
    assert red_left == blue_right == 0
    # Side by side: at most a sliver of the square pokes out above or below the circle's box.
    assert max(red_above, red_below, blue_above, blue_below) < 0.05


def test_features_linearly_reveal_the_colours_present():
    split = generate_split(np.random.default_rng(5), 300)
    features = extract_features(split.images).astype(np.float64)
    labels = np.array([[colour in {obj.colour for obj in scene.objects} for colour in COLOUR_WORDS]
                       for scene in split.scenes], dtype=np.float64)
    design = np.hstack([features, np.ones((len(features), 1))])
    weights = np.linalg.lstsq(design[:200], labels[:200], rcond=None)[0]
    predicted = design[200:] @ weights > 0.5
    assert (predicted == labels[200:].astype(bool)).mean() > 0.97


def test_extractor_rejects_wrong_input():
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\) uint8"):
        extract_features(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        extract_features(np.zeros((2, 64, 64, 3), dtype=np.float32))


# ---------------------------------------------------------------- writing and caching

def test_write_bundle_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        write_bundle(tmp_path, num_train=2, num_val=1)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_write_bundle_fills_an_existing_empty_directory(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    write_bundle(target, seed=1, num_train=3, num_val=2)
    assert (target / "captions.h5").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no staging directory left behind


@pytest.mark.parametrize("argument, value", [("seed", -1), ("num_train", 0), ("num_val", 2.5), ("num_train", True)])
def test_write_bundle_names_a_bad_argument(tmp_path, argument, value):
    with pytest.raises(ValueError, match=argument):
        write_bundle(tmp_path / "x", **{argument: value})
    assert not (tmp_path / "x").exists()


def test_builtin_dataset_is_generated_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_CACHE_DIR", str(tmp_path))
    first = builtin_dataset_dir(seed=2, num_train=6, num_val=3)
    assert first.parent == tmp_path and f"v{bundle.GENERATOR_VERSION}" in first.name
    assert load_coco_data(first)["train_features"].shape == (6, 512)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached dataset was regenerated")

    monkeypatch.setattr(bundle, "write_bundle", must_not_run)
    assert builtin_dataset_dir(seed=2, num_train=6, num_val=3) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_builtin_dataset_defaults_to_the_home_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPTIONKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert bundle.cache_root() == tmp_path / ".cache" / "captionkit"


def test_losing_a_generation_race_keeps_the_winners_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_CACHE_DIR", str(tmp_path))
    target = tmp_path / f"synthetic-v{bundle.GENERATOR_VERSION}-seed4-train5-val2"
    raced = []

    def other_process_finishes_first(stage, done, total):
        if not raced:
            raced.append(True)
            bundle.write_bundle(target, seed=4, num_train=5, num_val=2)
            (target / "winner").write_text("")

    assert builtin_dataset_dir(seed=4, num_train=5, num_val=2, progress=other_process_finishes_first) == target
    assert (target / "winner").exists()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.slow
def test_concurrent_first_use_by_two_processes(tmp_path):
    code = ("from captionkit.synthetic import builtin_dataset_dir; "
            "print(builtin_dataset_dir(seed=9, num_train=30, num_val=5))")
    env = dict(os.environ, CAPTIONKIT_CACHE_DIR=str(tmp_path))
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=120)[0].strip() for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    assert outputs[0] == outputs[1]
    assert [p.name for p in tmp_path.iterdir()] == [Path(outputs[0]).name]
    assert load_coco_data(outputs[0])["val_captions"].shape == (25, 17)


# ---------------------------------------------------------------- command line

def test_cli_synth_then_inspect(tmp_path):
    runner = CliRunner()
    target = tmp_path / "bundle"
    result = runner.invoke(main, ["data", "synth", str(target), "--seed", "3", "--num-train", "10", "--num-val", "4"])
    assert result.exit_code == 0, result.output
    assert "wrote 10 train, 4 val images" in result.output
    assert digest_files(target) == digest_files(write_bundle(tmp_path / "api", seed=3, num_train=10, num_val=4))

    result = runner.invoke(main, ["data", "inspect", str(target), "--examples", "3"])
    assert result.exit_code == 0, result.output
    vocab_size = len(json.loads((target / "vocab.json").read_text())["idx_to_word"])
    assert "train: 50 captions (50, 17) int32 of 10 images (5.0 per image); features (10, 512) float32" in result.output
    assert "val: 20 captions (20, 17) int32 of 4 images" in result.output
    assert f"vocabulary: {vocab_size} words" in result.output
    assert "most common words: a (" in result.output
    shown = [line for line in result.output.splitlines() if "synthetic://train/" in line]
    assert [line.split()[0] for line in shown] == [f"synthetic://train/{i:06d}" for i in range(3)]

    raw = runner.invoke(main, ["data", "inspect", str(target), "--raw-features"])  # no PCA: the same features
    assert "features (10, 512) float32" in raw.output


def test_cli_reports_bad_directories(tmp_path):
    runner = CliRunner()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    result = runner.invoke(main, ["data", "synth", str(tmp_path / "full"), "--num-train", "2", "--num-val", "1"])
    assert result.exit_code == 1 and "not an empty directory" in result.output

    (tmp_path / "empty").mkdir()
    result = runner.invoke(main, ["data", "inspect", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "captions.h5" in result.output and "not found" in result.output
