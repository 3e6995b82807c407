"""`captionkit data import`: Karpathy split files and caption tables to bundles, and everything it refuses or drops.

Each case names what a user would see: the file, the entry (``images[3] (x.png)``, ``line 4``) and the problem;
nothing half-written is ever left where the bundle was asked for.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from captionkit import train
from captionkit.captioning import load_captioner
from captionkit.cli import main
from captionkit.data import load_coco_data
from captionkit.encoders import make_encoder
from captionkit.encoders.pipeline import Pca
from captionkit.importing import CaptionFileError, build_vocabulary, import_dataset, read_captions_file, tokenize
from captionkit.synthetic import extract_features
from training_helpers import TINY


def picture(seed, size=64):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def sentence(text):
    return {"tokens": text.split(), "raw": text}


def karpathy(tmp_path, entries, name="dataset.json"):
    """Write pictures for ``entries`` (filename, split, [captions]) and their Karpathy file -> its path."""
    images = []
    for k, (filename, split, captions) in enumerate(entries):
        Image.fromarray(picture(k)).save(tmp_path / filename)
        images.append({"filename": filename, "imgid": k, "split": split,
                       "sentences": [sentence(c) if isinstance(c, str) else c for c in captions]})
    path = tmp_path / name
    path.write_text(json.dumps({"dataset": "mine", "images": images}), encoding="utf-8")
    return path


BASIC = [("a.png", "train", ["a red square", "a red box"]), ("b.png", "train", ["a blue square"]),
         ("c.png", "restval", ["a red disc"]), ("d.png", "val", ["a green square"]), ("e.png", "test", ["red"])]


def test_karpathy_file_to_bundle(tmp_path):
    source = karpathy(tmp_path, BASIC)
    report = import_dataset(tmp_path / "bundle", source, make_encoder("shapes"), min_count=2)
    data = load_coco_data(tmp_path / "bundle")
    # restval counts as train; min_count 2 over the training captions keeps a, red, square.
    assert report.images == {"train": 3, "val": 1, "test": 1}
    assert data["idx_to_word"] == ["<NULL>", "<START>", "<END>", "<UNK>", "a", "red", "square"]
    assert data["train_captions"].tolist()[:2] == [[1, 4, 5, 6, 2] + [0] * 13, [1, 4, 5, 3, 2] + [0] * 13]
    assert data["train_image_idxs"].tolist() == [0, 0, 1, 2]
    assert data["test_captions"].tolist() == [[1, 5, 2] + [0] * 15]
    for split, names in (("train", "abc"), ("val", "d"), ("test", "e")):
        assert [u.rsplit("/", 1)[1] for u in data[f"{split}_urls"]] == [f"{n}.png" for n in names]
        expected = extract_features(np.stack([picture("abcde".index(n)) for n in names]))
        np.testing.assert_array_equal(data[f"{split}_features"], expected)
    assert report.unknown_words == 4  # box, blue, disc (train) and green (val)
    saved = json.loads((tmp_path / "bundle" / "import.json").read_text())
    assert saved["images"] == report.images and saved["vocabulary_size"] == 7


def test_unknown_word_count_is_per_occurrence(tmp_path):
    source = karpathy(tmp_path, [("a.png", "train", ["x x y"]), ("b.png", "val", ["x z z"])])
    report = import_dataset(tmp_path / "bundle", source, make_encoder("shapes"), min_count=2)
    assert report.unknown_words == 3  # y in train; z twice in val


def test_long_captions_are_cut_and_counted(tmp_path):
    long = " ".join(["w"] * 20)
    source = karpathy(tmp_path, [("a.png", "train", [long, "w w"]), ("b.png", "val", ["w"])])
    report = import_dataset(tmp_path / "bundle", source, make_encoder("shapes"), min_count=1, max_words=5)
    data = load_coco_data(tmp_path / "bundle")
    assert data["train_captions"].shape == (2, 7) and data["train_captions"][0].tolist() == [1, 4, 4, 4, 4, 4, 2]
    assert report.cut_captions == 1


def test_non_ascii_text_is_kept(tmp_path):
    source = karpathy(tmp_path, [("a.png", "train", [{"raw": "Un café près de la forêt, naïvement!"}]),
                                 ("b.png", "val", [{"raw": "東京の 猫"}])])
    import_dataset(tmp_path / "bundle", source, make_encoder("shapes"), min_count=1)
    data = load_coco_data(tmp_path / "bundle")
    assert data["idx_to_word"][4:] == sorted(["un", "café", "près", "de", "la", "forêt", "naïvement"])
    assert tokenize("東京の 猫, don't!") == ["東京の", "猫", "don't"]


def test_empty_captions_are_dropped_and_reported(tmp_path):
    source = karpathy(tmp_path, [("a.png", "train", ["a cat", {"tokens": []}, {"raw": "?!"}]),
                                 ("b.png", "train", [{"tokens": []}]), ("c.png", "val", ["a cat"])])
    report = import_dataset(tmp_path / "bundle", source, make_encoder("shapes"), min_count=1)
    assert report.images["train"] == 1 and report.captions["train"] == 1
    assert report.dropped == ["images[0] (a.png): 2 caption(s) with no words dropped",
                              "images[1] (b.png): 1 caption(s) with no words dropped",
                              "images[1] (b.png): no captions left; picture dropped"]


def test_missing_pictures_are_an_error_unless_skipped(tmp_path):
    source = karpathy(tmp_path, BASIC)
    (tmp_path / "b.png").unlink()
    with pytest.raises(CaptionFileError, match=r"1 pictures not found: .*b\.png \(images\[1\] \(b\.png\)\).*"
                                               r"--skip-missing"):
        import_dataset(tmp_path / "bundle", source, make_encoder("shapes"))
    assert not (tmp_path / "bundle").exists()
    (tmp_path / "c.png").write_bytes(b"not a png")  # unreadable: also skipped with the option
    report = import_dataset(tmp_path / "bundle", source, make_encoder("shapes"), skip_missing=True, min_count=1)
    assert report.images["train"] == 1
    assert [line.split(":")[0] for line in report.dropped] == ["images[1] (b.png)", "images[2] (c.png)"]
    assert "not an image" in report.dropped[1]


@pytest.mark.parametrize("change, message", [
    (lambda images: images[3].update(imgid=0), r"images\[0\] \(a\.png\) and images\[3\] \(d\.png\) share imgid 0"),
    (lambda images: images[3].update(filename="a.png"), r"images\[0\] \(a\.png\) and images\[3\] \(a\.png\) are the "
                                                         r"same picture"),
    (lambda images: images[1].update(split="dev"), r"images\[1\] \(b\.png\) has split 'dev'; known splits: train, "
                                                   r"val, test, and restval"),
    (lambda images: images[2].pop("filename"), r"images\[2\] has no 'filename'"),
    (lambda images: images[2].pop("sentences"), r"images\[2\] \(c\.png\) has no 'sentences' list"),
    (lambda images: images[2]["sentences"].append({"text": "x"}), r"images\[2\] \(c\.png\) sentences\[1\] has "
                                                                  r"neither 'tokens'"),
    (lambda images: [i.update(split="train") for i in images], r"no val pictures with captions"),
])
def test_bad_karpathy_entries_are_named(tmp_path, change, message):
    source = karpathy(tmp_path, BASIC)
    document = json.loads(source.read_text())
    change(document["images"])
    source.write_text(json.dumps(document))
    with pytest.raises(CaptionFileError, match=rf"dataset\.json: .*{message}" if "no val" not in message else message):
        import_dataset(tmp_path / "bundle", source, make_encoder("shapes"))
    assert list(tmp_path.glob("*bundle*")) == []  # neither the bundle nor a staging folder


def test_files_that_are_not_caption_files_are_named(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CaptionFileError, match=r"broken\.json: not a readable JSON file"):
        read_captions_file(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(CaptionFileError, match=r"list\.json: expected a Karpathy split file"):
        read_captions_file(tmp_path / "list.json")
    (tmp_path / "captions.txt").write_text("")
    with pytest.raises(CaptionFileError, match=r"captions\.txt: caption files are Karpathy split files"):
        read_captions_file(tmp_path / "captions.txt")
    with pytest.raises(CaptionFileError, match=r"absent\.json: file not found"):
        read_captions_file(tmp_path / "absent.json")


def _table_pictures(tmp_path, count):
    for k in range(count):
        Image.fromarray(picture(k)).save(tmp_path / f"p{k}.png")


def test_csv_and_jsonl_tables(tmp_path):
    _table_pictures(tmp_path, 12)
    rows = [f"p{k}.png,A picture number {k}." for k in range(12)] + ["p0.png,\"Another, with a comma\""]
    (tmp_path / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    pictures = read_captions_file(tmp_path / "captions.csv", seed=3)
    assert len(pictures) == 12 and pictures[0].captions == [["a", "picture", "number", "0"],
                                                            ["another", "with", "a", "comma"]]
    held_out = [p.path.name for p in pictures if p.split == "val"]
    assert len(held_out) == 1  # a tenth of 12, rounded, at least one
    assert held_out == [p.path.name for p in read_captions_file(tmp_path / "captions.csv", seed=3) if p.split == "val"]

    lines = [json.dumps({"image": f"p{k}.png", "captions": [f"picture {k}", "a picture"],
                         "split": "val" if k < 2 else "train"}) for k in range(12)]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n\n")
    report = import_dataset(tmp_path / "bundle", tmp_path / "captions.jsonl", make_encoder("shapes"), min_count=1)
    assert report.images == {"train": 10, "val": 2} and report.captions == {"train": 20, "val": 4}


@pytest.mark.parametrize("name, content, message", [
    ("c.csv", "file,text\np0.png,hi\n", r"c\.csv: the header row must name the columns image and caption"),
    ("c.csv", "image,caption,split\np0.png,hi,train\np1.png,hi,\n", r"c\.csv: line 3 \(p1\.png\) has no split, but "
                                                                    r"other rows have one"),
    ("c.csv", "image,caption,split\np0.png,hi,train\np0.png,ho,val\n", r"line 3 puts p0\.png in split val, but line "
                                                                       r"2 \(p0\.png\) put it in train"),
    ("c.csv", "image,caption\n,hi\n", r"c\.csv: line 2 has no image"),
    ("c.jsonl", '{"image": "p0.png", "caption": "hi"}\n[1]\n', r"c\.jsonl: line 2 is list, expected an object"),
    ("c.jsonl", '{"image": "p0.png", "caption": 3}\n', r"line 1 \(p0\.png\) has a caption that is not text"),
    ("c.jsonl", "{oops\n", r"c\.jsonl: line 1 is not JSON"),
])
def test_bad_tables_are_named(tmp_path, name, content, message):
    _table_pictures(tmp_path, 2)
    (tmp_path / name).write_text(content)
    with pytest.raises(CaptionFileError, match=message):
        read_captions_file(tmp_path / name)


def test_vocabulary_orders_by_frequency_then_alphabet(tmp_path):
    from captionkit.importing import Picture

    pictures = [Picture(tmp_path, "train", [["b", "a", "c"], ["c", "b"], ["c", "<UNK>"]], "x")]
    assert build_vocabulary(pictures, 1)[4:] == ["c", "b", "a"]
    assert build_vocabulary(pictures, 2)[4:] == ["c", "b"]


def test_a_failing_encoder_leaves_nothing_behind(tmp_path):
    source = karpathy(tmp_path, BASIC)

    class Failing:
        batch_size, dim = 2, 3

        @staticmethod
        def name():
            return "failing"

        def encode(self, images):
            raise RuntimeError("the encoder broke")

    with pytest.raises(RuntimeError, match="the encoder broke"):
        import_dataset(tmp_path / "bundle", source, Failing())
    assert [p.name for p in tmp_path.iterdir() if "bundle" in p.name] == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="full: already exists and is not an empty directory"):
        import_dataset(tmp_path / "full", source, make_encoder("shapes"))


def test_pca_bundle_trains_and_captions_with_the_same_features(tmp_path):
    entries = [(f"t{k}.png", "train", ["a thing", "the thing"]) for k in range(12)] + [("v.png", "val", ["a thing"])]
    source = karpathy(tmp_path, entries)
    report = import_dataset(tmp_path / "bundle", source, make_encoder("shapes"), min_count=1, pca_dim=6)
    assert (report.feature_dim, report.pca_dim) == (512, 6)
    reduced, full = load_coco_data(tmp_path / "bundle"), load_coco_data(tmp_path / "bundle", pca_features=False)
    pca = Pca.load(tmp_path / "bundle" / "pca.h5")
    assert reduced["train_features"].shape == (12, 6) and full["train_features"].shape == (12, 512)
    np.testing.assert_allclose(reduced["val_features"], pca.transform(full["val_features"]), rtol=1e-6)

    for use_pca, width in ((True, 6), (False, 512)):
        run = tmp_path / f"run-{use_pca}"
        train(data=str(tmp_path / "bundle"), out=run, pca=use_pca, handle_signals=False, **TINY)
        model, _, pipeline = load_captioner(run)
        assert model.input_dim == pipeline.dim == width and (run / "pca.h5").is_file() == use_pca
        features = pipeline.encode_files([tmp_path / "t3.png"])
        expected = (reduced if use_pca else full)["train_features"][3]
        np.testing.assert_allclose(features[0], expected, rtol=1e-5, atol=1e-6)


def test_cli_import_prints_what_it_did(tmp_path):
    source = karpathy(tmp_path, BASIC)
    result = CliRunner().invoke(main, ["data", "import", str(tmp_path / "bundle"), "--karpathy", str(source),
                                       "--encoder", "shapes", "--min-count", "2"])
    assert result.exit_code == 0, result.output
    assert "train: 3 pictures, 4 captions" in result.output and "test: 1 pictures, 1 captions" in result.output
    assert "vocabulary: 7 words (seen at least 2 times in train); 4 word occurrences became <UNK>" in result.output
    assert f"train on it with: captionkit train --data {tmp_path / 'bundle'}" in result.output
    both = CliRunner().invoke(main, ["data", "import", str(tmp_path / "other"), "--encoder", "shapes"])
    assert both.exit_code == 2 and "give exactly one caption file" in both.output
    bad = CliRunner().invoke(main, ["data", "import", str(tmp_path / "other"), "--karpathy", str(source),
                                    "--encoder", "onnx:missing.onnx"])
    assert bad.exit_code == 1 and "missing.onnx: file not found" in bad.output
