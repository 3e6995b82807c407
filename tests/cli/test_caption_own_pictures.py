"""`captionkit caption` and `data import` on a user's own pictures (issue #23 items 1, 2, 5, 10, 11, 14, 20): bombs
and corrupt files skipped and reported, outputs that are input pictures refused, names printed escaped, OUT checked
before any picture is encoded, out-of-memory named. The run is a tiny one trained on the shapes pictures."""
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from captionkit.cli import main
from captionkit.cli.terminal import quoted

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(root, run directory, pictures folder): shapes pictures, their bundle and a run trained one epoch on it."""
    root = tmp_path_factory.mktemp("own_pictures")
    steps = [("data", "synth", root / "pictures", "--pictures", "--num-train", 30, "--num-val", 6, "--num-test", 4),
             ("data", "import", root / "bundle", "--karpathy", root / "pictures" / "dataset_shapes.json", "--images",
              root / "pictures" / "images", "--encoder", "shapes"),
             ("train", "--data", root / "bundle", "--epochs", 1, "--hidden-dim", 8, "--wordvec-dim", 8,
              "--batch-size", 8, "--eval-images", 4, "--num-samples", 2, "--out", root / "run")]
    for step in steps:
        result = run_cli(*step)
        assert result.exit_code == 0, result.output
    return root, root / "run", root / "pictures" / "images"


def bombs(folder, good):
    """{name: path} of a PNG of 20000x20000 (over Pillow's own limit), one of 12000x12000 (144 Mpx), a JPEG of a few
    hundred bytes declaring 9000x9000 and the picture ``good`` cut short, each a small file."""
    folder.mkdir()
    Image.new("1", (20000, 20000)).save(folder / "huge.png")
    Image.new("1", (12000, 12000)).save(folder / "big.png")
    small = folder / "declares.jpg"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(small)
    data = bytearray(small.read_bytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = (9000).to_bytes(2, "big") * 2
    small.write_bytes(bytes(data))
    (folder / "cut.png").write_bytes(good.read_bytes()[:300])
    return {path.name: path for path in folder.iterdir()}


def test_bombs_and_corrupt_pictures_are_skipped_and_the_good_ones_captioned(run, tmp_path):
    _, run_dir, images = run
    good = [images / "test_000000.png", images / "test_000001.png"]
    bad = bombs(tmp_path / "mixed", good[0])
    for path in good:
        (tmp_path / "mixed" / path.name).write_bytes(path.read_bytes())
    expected = run_cli("caption", run_dir, *good)
    assert expected.exit_code == 0, expected.output
    captions = [line.split("\t")[1] for line in expected.stdout.splitlines()]

    result = run_cli("caption", run_dir, tmp_path / "mixed", "--skip-unreadable", "--out", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{tmp_path / 'mixed' / p.name}\t{c}" for p, c in zip(good, captions)]
    assert f"skipped {bad['big.png']}: picture too large (12000 x 12000 > 67,108,864 pixels" in result.stderr
    assert f"skipped {bad['declares.jpg']}: picture too large (9000 x 9000 > 67,108,864 pixels" in result.stderr
    assert f"skipped {bad['huge.png']}: picture too large" in result.stderr  # over Pillow's hard limit
    assert f"skipped {bad['cut.png']}: cannot read image" in result.stderr
    assert "skipped 4 of 6 pictures" in result.stderr
    assert "DecompressionBomb" not in result.stderr and "unexpected" not in result.stderr
    assert len(json.loads((tmp_path / "c.json").read_text())) == 6
    # The limit can be raised: the 144-megapixel picture is then read (and captioned).
    raised = run_cli("caption", run_dir, bad["big.png"], "--max-picture-pixels", 144_000_000)
    assert raised.exit_code == 0, raised.output
    assert raised.stdout.startswith(f"{bad['big.png']}\t")


def test_data_import_skips_a_picture_replaced_by_a_bomb(run, tmp_path):
    root, _, images = run
    copy = tmp_path / "images"
    copy.mkdir()
    for path in images.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    Image.new("1", (20000, 20000)).save(copy / "train_000003.png")
    result = run_cli("data", "import", tmp_path / "bundle", "--karpathy", root / "pictures" / "dataset_shapes.json",
                     "--images", copy, "--encoder", "shapes", "--skip-missing")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bundle" / "import.json").read_text())
    assert any("train_000003.png: picture too large" in line for line in report["dropped"])
    assert "  train: 29 pictures" in result.stdout


@pytest.mark.parametrize("option", ["--out", "--grid"])
def test_an_output_that_is_an_input_picture_is_refused_before_reading(run, tmp_path, option):
    _, run_dir, images = run
    album = tmp_path / "album"
    album.mkdir()
    picture = album / "photo.png"
    picture.write_bytes((images / "test_000002.png").read_bytes())
    link = tmp_path / "hard_link.json"
    os.link(picture, link)
    symlink = tmp_path / "symlink.png"
    symlink.symlink_to(picture)
    before = picture.read_bytes()
    for output in (picture, link, symlink, album / "." / "photo.png"):
        result = run_cli("caption", run_dir, album, option, output)
        assert result.exit_code == 2, result.output
        assert f"{option} {output} is one of the input pictures ({picture})" in result.stderr
        assert result.stdout == ""
    assert picture.read_bytes() == before


def test_names_are_printed_escaped_one_picture_a_line(run, tmp_path):
    _, run_dir, images = run
    names = ["title\x1b]2;pwned\x07.png", "clear\x1b[2J.png", "tab\there.png", "new\nline.png"]
    for name in names:
        (tmp_path / name).write_bytes((images / "test_000003.png").read_bytes())
    (tmp_path / "bad\x1b[2Jname.png").write_bytes(b"not a picture")
    result = run_cli("caption", run_dir, tmp_path, "--skip-unreadable")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == sorted(quoted(tmp_path / n) for n in names)
    assert all(line.count("\t") == 1 for line in lines) and "\x1b" not in result.stdout
    assert f"skipped {tmp_path}/bad\\x1b[2Jname.png: not an image Pillow can read" in result.stderr
    assert "\x1b" not in result.stderr


def test_an_existing_out_is_refused_before_any_picture_is_encoded(run, tmp_path):
    root, _, images = run
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "something").write_text("kept")
    copy = tmp_path / "images"
    copy.mkdir()
    for path in images.iterdir():
        (copy / path.name).write_bytes(b"unreadable")  # encoding would fail on the first picture
    result = run_cli("data", "import", out, "--karpathy", root / "pictures" / "dataset_shapes.json",
                     "--images", copy, "--encoder", "shapes")
    assert result.exit_code == 1
    assert f"{out}: already exists and is not an empty directory" in result.stderr
    assert "unreadable" not in result.stderr and "cannot read" not in result.stderr
    assert (out / "something").read_text() == "kept"


def test_running_out_of_memory_names_the_picture_not_a_bug(run, tmp_path):
    _, run_dir, images = run
    big = tmp_path / "big.png"
    Image.fromarray(np.full((7000, 9000, 3), 90, np.uint8)).save(big)  # 189 MB decoded, a small file

    def limit_memory():  # 700 MB of address space: the interpreter and libraries fit, the decoded picture does not
        resource.setrlimit(resource.RLIMIT_AS, (700 << 20, 700 << 20))

    code = "from captionkit.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "caption", str(run_dir), str(images / "test_000000.png"),
                             str(big), "--max-picture-pixels", "100000000"], preexec_fn=limit_memory,
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (f"Error: out of memory: {big}: decoding the picture of 9000 x 7000 (189 MB as "
                                     "RGB) failed; free memory or lower --max-picture-pixels")


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_out_writes_the_format_its_suffix_names(run, tmp_path, suffix):
    """Each format read back with its own parser gives the same entries as the printed lines, the unreadable
    picture with its error."""
    import csv
    import json

    _, run_dir, images = run
    album = tmp_path / "album"
    album.mkdir()
    for name in ("test_000000.png", "test_000001.png"):
        (album / name).write_bytes((images / name).read_bytes())
    (album / "broken, \"quoted\".png").write_bytes(b"not a picture")
    out = tmp_path / f"captions{suffix}"
    result = run_cli("caption", run_dir, album, "--skip-unreadable", "--out", out)
    assert result.exit_code == 0, result.output
    printed = dict(line.split("\t") for line in result.stdout.splitlines())
    text = out.read_text(encoding="utf-8")
    if suffix == ".json":
        entries = json.loads(text)
    elif suffix == ".jsonl":
        entries = [json.loads(line) for line in text.splitlines()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
        entries = [{"image": r["image"], "caption": r["caption"] or None, **({"error": r["error"]} if r["error"]
                                                                             else {})} for r in rows]
    assert len(entries) == 3
    assert {e["image"]: e["caption"] for e in entries if e["caption"] is not None} == printed
    [broken] = [e for e in entries if e["caption"] is None]
    assert broken["image"].endswith("broken, \"quoted\".png") and "broken" in broken["error"]


def test_out_with_an_unknown_suffix_is_refused_before_any_picture_is_read(run, tmp_path):
    _, run_dir, images = run
    result = run_cli("caption", run_dir, images / "test_000000.png", "--out", tmp_path / "captions.txt")
    assert result.exit_code == 2
    assert "the suffix must be one of .json, .jsonl, .csv" in result.stderr
    assert result.stdout == "" and not (tmp_path / "captions.txt").exists()
