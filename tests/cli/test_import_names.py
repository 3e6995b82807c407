"""`captionkit data import`: picture names must stay inside --images, and hostile caption files fail cleanly.

The pictures are the built-in dataset's scenes written as PNG files (`data synth --pictures`); caption files are
written by hand around them: names leading out of the folder (``..``, absolute, a symbolic link, a Karpathy
``filepath``), JSON nested 100000 deep, a FIFO, and a 2 GB sparse file that is not JSON.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import pytest
from click.testing import CliRunner

from captionkit.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """(images folder, a picture outside it, the scenes' Karpathy entries)."""
    root = tmp_path_factory.mktemp("names")
    result = invoke("data", "synth", root / "synth", "--pictures", "--num-train", 6, "--num-val", 2, "--seed", 1)
    assert result.exit_code == 0, result.output
    secret = root / "secret"
    secret.mkdir()
    shutil.copy(root / "synth" / "images" / "train_000000.png", secret / "private.png")
    entries = json.loads((root / "synth" / "dataset_shapes.json").read_text())["images"]
    return root / "synth" / "images", secret / "private.png", entries


def table(path, names):
    """A CSV caption table with one caption per name; the last name is the val picture."""
    rows = ["image,caption,split"] + [f"{name},a red circle,{'val' if k == len(names) - 1 else 'train'}"
                                      for k, name in enumerate(names)]
    path.write_text("\n".join(rows) + "\n")
    return path


def inside_names(images):
    return sorted(p.name for p in images.iterdir())[:3]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_table_names_outside_the_images_folder_are_refused_naming_the_row(pictures, tmp_path, kind):
    images, private, _ = pictures
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    if kind == "dotdot":
        name = os.path.relpath(private, folder)
    elif kind == "absolute":
        name = str(private)
    else:
        (folder / "innocent.png").symlink_to(private)
        name = "innocent.png"
    captions = table(tmp_path / "captions.csv", [name, *inside_names(folder)])
    result = invoke("data", "import", tmp_path / "bundle", "--captions", captions, "--images", folder,
                    "--encoder", "shapes", "--min-count", 1)
    assert result.exit_code != 0
    assert f"{captions}: line 2 ({name}): the picture name {name!r}" in result.output
    assert ("is an absolute path" if kind == "absolute" else
            f"leads outside the images folder {folder} (to {private.resolve()})") in result.output
    assert "--allow-outside-images" in result.output
    assert not (tmp_path / "bundle").exists()

    allowed = invoke("data", "import", tmp_path / "bundle", "--captions", captions, "--images", folder,
                     "--encoder", "shapes", "--min-count", 1, "--allow-outside-images")
    assert allowed.exit_code == 0, allowed.output
    urls = (tmp_path / "bundle" / "train_urls.txt").read_text().split("\n")
    assert urls[0] == str(private.resolve())


def test_a_karpathy_filepath_leading_out_is_refused(pictures, tmp_path):
    images, private, entries = pictures
    crafted = [dict(entries[0], filepath="../secret", filename="private.png"), *entries[1:]]
    split_file = tmp_path / "dataset.json"
    split_file.write_text(json.dumps({"images": crafted}))
    result = invoke("data", "import", tmp_path / "bundle", "--karpathy", split_file, "--images", images,
                    "--encoder", "shapes")
    assert result.exit_code != 0
    assert (f"{split_file}: images[0] (private.png): the picture name '../secret/private.png' leads outside the "
            f"images folder {images}") in result.output


def test_names_inside_the_folder_are_imported(pictures, tmp_path):
    images, _, _ = pictures
    names = [f"../images/{name}" for name in inside_names(images)]  # ".." that comes back in is inside
    captions = table(tmp_path / "captions.csv", names)
    result = invoke("data", "import", tmp_path / "bundle", "--captions", captions, "--images", images,
                    "--encoder", "shapes", "--min-count", 1)
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "bundle" / "train_features.h5") as f:
        assert f["features"].shape[0] == 2


@pytest.mark.parametrize("suffix, content, message", [
    (".jsonl", "[" * 100000 + "]" * 100000,
     r"line 1 is not a readable JSON object \(nested too deeply\)"),
    (".jsonl", '{"image": "a.png", "caption": "x"}\n' + "[" * 30000 + "]" * 30000 + "\n",
     r"line 2 is not a readable JSON object \(nested too deeply\)"),
    (".json", '{"images": ' + "[" * 100000 + "]" * 100000 + "}",
     r"not a readable JSON file \(nested too deeply\)"),
])
def test_caption_files_nested_deep_name_the_file_and_line(tmp_path, suffix, content, message):
    path = tmp_path / f"captions{suffix}"
    path.write_text(content)
    option = "--karpathy" if suffix == ".json" else "--captions"
    result = invoke("data", "import", tmp_path / "bundle", option, path, "--encoder", "shapes")
    assert result.exit_code != 0
    assert result.output.count("\n") <= 2 and "unexpected" not in result.output
    assert str(path) in result.output
    assert re.search(message, result.output), result.output


def _child_import(tmp_path, option, path, timeout=60):
    code = "import sys; from captionkit.cli import main; sys.exit(main())"
    args = ["data", "import", str(tmp_path / "bundle"), option, str(path), "--encoder", "shapes"]
    try:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"data import {option} {path} did not end within {timeout} s")


def test_a_large_file_that_is_not_json_is_refused_from_its_first_bytes(tmp_path):
    big = tmp_path / "photos.json"
    with open(big, "wb") as f:  # 2 GB, sparse: nothing is written but its first bytes, a PNG signature
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(2 * 2**30)
    done = _child_import(tmp_path, "--karpathy", big)
    assert done.returncode != 0
    assert f"{big}: expected a Karpathy split file: an object with an 'images' list" in done.stderr
    json_like = tmp_path / "huge.json"
    with open(json_like, "wb") as f:  # starts like JSON: refused by its size, before anything is read
        f.write(b'{"images": [')
        f.truncate(2 * 2**30)
    done = _child_import(tmp_path, "--karpathy", json_like)
    assert done.returncode != 0
    assert f"{json_like}: a caption file is at most 512.0 MiB (536870912 bytes); this one has {2 * 2**30}" in done.stderr


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_fifo_caption_file_is_refused_not_waited_on(tmp_path, suffix):
    fifo = tmp_path / f"captions{suffix}"
    os.mkfifo(fifo)
    done = _child_import(tmp_path, "--karpathy" if suffix == ".json" else "--captions", fifo)
    assert done.returncode != 0
    assert f"{fifo}: " in done.stderr and "unexpected" not in done.stderr
