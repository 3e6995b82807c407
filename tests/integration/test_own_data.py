"""From picture files to captions, end to end: `data import`, `train`, `caption`, on pictures no test has seen as
features.

The built-in dataset's scenes are written out as PNG files (enlarged twice, so the `shapes` encoder has to resize
them) with a Karpathy split file, imported with the `shapes` encoder, trained on briefly, and the held-out test
pictures are captioned from their files. The oracle is the dataset's own truth check (`captionkit.synthetic.is_true`:
the caption is a sentence of the grammar that is true of the scene's objects), not a reference caption.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from captionkit import train
from captionkit.captioning import caption_images
from captionkit.data import load_coco_data
from captionkit.encoders.base import EncoderError
from captionkit.images import ImageFileError, read_image
from captionkit.synthetic import extract_features, is_true
from captionkit.synthetic.scenes import Scene
from training_helpers import TINY, run_cli, tiny_bundle

NUM_TRAIN, NUM_VAL, NUM_TEST = 4000, 50, 100
# Measured when this test was written (4000 training pictures, 10 epochs, hidden 256): 71-75% of the test pictures'
# captions were true on three seeds of the pictures; captions paired with other pictures of the same run (chance)
# were true 3-8% of the time. 50% ("most") leaves a margin of five binomial standard deviations (100 pictures).
TRUE_AT_LEAST = 0.5
CHANCE_AT_MOST = 0.25


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Pictures, their imported bundle and a run trained on it, made with the commands a user types."""
    root = tmp_path_factory.mktemp("own_data")
    result = run_cli("data", "synth", root / "pictures", "--pictures", "--seed", 5, "--num-train", NUM_TRAIN,
                     "--num-val", NUM_VAL, "--num-test", NUM_TEST, "--scale", 2)
    assert result.exit_code == 0, result.output
    result = run_cli("data", "import", root / "bundle", "--karpathy", root / "pictures" / "dataset_shapes.json",
                     "--images", root / "pictures" / "images", "--encoder", "shapes")
    assert result.exit_code == 0, result.output
    result = run_cli("train", "--data", root / "bundle", "--epochs", 10, "--hidden-dim", 256, "--eval-images", 50,
                     "--num-samples", 4, "--out", root / "run")
    assert result.exit_code == 0, result.output
    document = json.loads((root / "pictures" / "dataset_shapes.json").read_text())
    scenes = {entry["filename"]: Scene.from_dict(entry["scene"]) for entry in document["images"]}
    return root, scenes, document


def test_the_bundle_holds_the_pictures_features_and_splits(trained):
    root, scenes, document = trained
    data = load_coco_data(root / "bundle")
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL), ("test", NUM_TEST)):
        assert data[f"{split}_features"].shape == (count, 512)
        assert data[f"{split}_captions"].shape == (5 * count, 18)  # <START>, 16 words, <END>
    # The features of the enlarged PNG files equal those of the original 64x64 pixels: the encoder shrinks them back
    # exactly (area averaging of repeated pixels).
    first = Path(data["test_urls"][0])
    original = read_image(first)[::2, ::2]
    np.testing.assert_array_equal(data["test_features"][0], extract_features(original[None])[0])
    # The bundle's captions are the file's, in its order.
    test_entries = [e for e in document["images"] if e["split"] == "test"]
    assert [Path(u).name for u in data["test_urls"]] == [e["filename"] for e in test_entries]
    report = json.loads((root / "bundle" / "import.json").read_text())
    assert report["images"] == {"train": NUM_TRAIN, "val": NUM_VAL, "test": NUM_TEST} and report["dropped"] == []


def test_captions_of_held_out_picture_files_are_mostly_true(trained):
    root, scenes, _ = trained
    held_out = root / "pictures" / "images"
    test_files = sorted(held_out.glob("test_*.png"))
    results = caption_images(root / "run", test_files)
    assert [r["image"] for r in results] == [str(p) for p in test_files]
    truth = np.array([is_true(r["caption"].split(), scenes[Path(r["image"]).name]) for r in results])
    # Chance: the same captions judged against other pictures' scenes.
    shifted = np.array([is_true(r["caption"].split(), scenes[test_files[(k + 1) % len(test_files)].name])
                        for k, r in enumerate(results)])
    assert truth.mean() >= TRUE_AT_LEAST, [r["caption"] for r, ok in zip(results, truth) if not ok][:10]
    assert shifted.mean() <= CHANCE_AT_MOST


def test_caption_command_prints_writes_json_and_a_grid(trained):
    root, scenes, _ = trained
    pictures = root / "pictures" / "images"
    files = [pictures / "test_000003.png", pictures / "test_000001.png"]
    result = run_cli("caption", root / "run", *files, "--out", root / "captions.json", "--grid", root / "grid.png")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "\t" in line]
    expected = caption_images(root / "run", files)
    assert lines == [f"{e['image']}\t{e['caption']}" for e in expected]
    assert json.loads((root / "captions.json").read_text()) == expected
    assert read_image(root / "grid.png").shape[2] == 3
    # Beam search through the same command: a caption per picture, at least as probable as greedy's (not checked
    # here; tests/unit/test_decoding.py does), and still judged by the truth check only loosely.
    beam = run_cli("caption", root / "run", files[0], "--beam", 3)
    assert beam.exit_code == 0 and beam.output.count("\t") == 1


def test_a_directory_is_walked_for_pictures(trained, tmp_path):
    root, _, _ = trained
    (tmp_path / "sub").mkdir()
    source = root / "pictures" / "images"
    (tmp_path / "b.png").write_bytes((source / "test_000002.png").read_bytes())
    (tmp_path / "sub" / "a.PNG").write_bytes((source / "test_000004.png").read_bytes())
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / ".hidden.png").write_text("skipped")
    results = caption_images(root / "run", tmp_path)
    assert [Path(r["image"]).relative_to(tmp_path).as_posix() for r in results] == ["b.png", "sub/a.PNG"]


def test_evaluate_scores_the_test_split(trained):
    root, _, _ = trained
    result = run_cli("evaluate", root / "run", "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["images"] == NUM_TEST and scores["BLEU-1"] > 0.5


def test_the_run_records_its_encoder_and_makes_a_samples_grid(trained):
    root, _, _ = trained
    record = json.loads((root / "run" / "encoder.json").read_text())
    assert (record["encoder"], record["output_dim"], record["pca_dim"]) == ("shapes", 512, None)
    assert (root / "run" / "samples.png").is_file()  # drawn from the bundle's picture files


def _written(path, content):
    path.write_text(content)
    return path


def _folder(path):
    path.mkdir()
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", r"missing\.png: file not found"),
    (lambda d: _written(d / "notes.png", "not a picture"), r"notes\.png: not an image"),
    (lambda d: _folder(d / "empty"), r"empty: a directory with no image files"),
])
def test_bad_picture_files_are_named_in_one_line(trained, tmp_path, make, message):
    root, _, _ = trained
    path = make(tmp_path)
    with pytest.raises(ImageFileError, match=message):
        caption_images(root / "run", [path])
    result = run_cli("caption", root / "run", path)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("Error: ")


def test_unreadable_pictures_can_be_skipped_and_reported(trained, tmp_path):
    root, _, _ = trained
    source = root / "pictures" / "images"
    good = [source / "test_000005.png", source / "test_000006.png"]
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[0].read_bytes()[:200])
    text = _written(tmp_path / "notes.png", "not a picture")
    files = [good[0], cut, good[1], text]
    expected = {str(e["image"]): e["caption"] for e in caption_images(root / "run", good)}

    results = caption_images(root / "run", files, skip_unreadable=True)
    assert [r["image"] for r in results] == [str(p) for p in files]
    assert [r["caption"] for r in results] == [expected[str(good[0])], None, expected[str(good[1])], None]
    assert re.match(rf"{re.escape(str(cut))}: cannot read image", results[1]["error"])
    assert results[3]["error"] == f"{text}: not an image Pillow can read"

    result = run_cli("caption", root / "run", *files, "--skip-unreadable", "--out", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{p}\t{expected[str(p)]}" for p in good]
    assert f"skipped {text}: not an image Pillow can read" in result.stderr
    assert "skipped 2 of 4 pictures that could not be read" in result.stderr
    assert json.loads((tmp_path / "c.json").read_text()) == results
    nothing = run_cli("caption", root / "run", cut, text, "--skip-unreadable")
    assert nothing.exit_code == 1 and nothing.stdout == "" and "none of the pictures could be read" in nothing.stderr


def test_a_run_without_a_recorded_encoder_is_refused(tmp_path):
    bundle = tiny_bundle(tmp_path / "assignment_layout")  # the CS231n names, no encoder.json
    train(data=str(bundle), out=tmp_path / "run", handle_signals=False, **TINY)
    picture = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(picture)
    with pytest.raises(EncoderError, match="records no image encoder.*CS231n COCO bundle"):
        caption_images(tmp_path / "run", [picture])


def test_a_run_whose_encoder_changed_is_refused(trained, tmp_path):
    root, _, _ = trained
    import shutil

    shutil.copytree(root / "run", tmp_path / "run")
    record_path = tmp_path / "run" / "encoder.json"
    record = json.loads(record_path.read_text())
    record["identity"]["features_version"] = 0
    record_path.write_text(json.dumps(record))
    with pytest.raises(EncoderError, match="no longer gives the features recorded: features_version was 0"):
        caption_images(tmp_path / "run", [root / "pictures" / "images" / "test_000000.png"])
