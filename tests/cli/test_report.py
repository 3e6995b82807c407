"""`captionkit report` and `captionkit caption --html`: from `train` on the built-in data to a page whose scores are
the ones `captionkit evaluate` prints, pictures from each kind of bundle (pixels, picture files, web URLs), and what
is refused.

Oracles: `captionkit evaluate --json` on the same run, images and decoding; the bundle's own pixels
(captionkit.data.load_images) and picture files (captionkit.images.thumbnail) against the thumbnails read back with
Pillow; the page's markup read with html.parser; the messages captionkit promises.
"""
import html
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from captionkit.data import bundle_dir, load_images
from captionkit.images import thumbnail
from training_helpers import TINY, run_cli


class Images(HTMLParser):
    """The src of every <img> and the href of every <a> of a page."""

    def __init__(self):
        super().__init__()
        self.sources, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])


def page_images(page):
    reader = Images()
    reader.feed(page.read_text(encoding="utf-8"))
    return reader


def score_rows(page, per_row):
    """Each row's score cells' data-value, in the page's order (``per_row`` cells a row: CIDEr-D and BLEU-4 of each
    run, then the difference with two runs)."""
    values = [float(v) for v in re.findall(r'<td class="score" data-value="([^"]+)"', page.read_text())]
    return [values[k:k + per_row] for k in range(0, len(values), per_row)]


def read_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def options(**changes):
    merged = {**TINY, **changes}
    return [item for name, value in merged.items() for item in (f"--{name.replace('_', '-')}", value)]


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
    """A run trained from the command line on the built-in dataset (400 of its captions)."""
    run = tmp_path_factory.mktemp("report") / "run"
    trained = run_cli("train", *options(max_train=400, batch_size=50, epochs=2, eval_images=20), "--out", run,
                      "--quiet")
    assert trained.exit_code == 0, trained.output
    return run


@pytest.mark.parametrize("beam", [1, 2])
def test_from_train_to_report_on_the_builtin_data(builtin_run, tmp_path, beam):
    out = tmp_path / "report"
    result = run_cli("report", builtin_run, "--out", out, "--max-images", 24, "--beam", beam)
    assert result.exit_code == 0, result.output
    assert f"using {builtin_run / 'checkpoints' / 'best.npz'} (best val CIDEr-D" in result.output
    page = out / "index.html"
    assert result.output.endswith(f"wrote {page}\n")
    scores = [row[0] for row in score_rows(page, 2)]
    assert len(scores) == 24 and scores == sorted(scores)  # worst first
    evaluated = json.loads(run_cli("evaluate", builtin_run, "--max-images", 24, "--beam", beam, "--json").stdout)
    assert np.mean(scores) == pytest.approx(evaluated["CIDEr-D"], rel=1e-12, abs=1e-12)
    assert f"CIDEr-D {evaluated['CIDEr-D']:.4f}" in page.read_text()

    # Each thumbnail is the built-in dataset's own pixels of the image its row names.
    text = page.read_text()
    shown = re.findall(r'<img src="(pictures/\d+\.png)" alt="val image (\d+)">', text)
    assert len(shown) == 24
    pixels = load_images(bundle_dir(None), "val", [int(image) for _, image in shown])
    for (src, _), expected in zip(shown, pixels):
        np.testing.assert_array_equal(read_png(out / src), expected)
    assert (out / "plots" / "run-1-loss.png").read_bytes() == (builtin_run / "loss.png").read_bytes()
    assert all(not source.startswith(("http:", "https:", "//")) for source in page_images(page).sources)


def test_two_runs_share_a_row_per_picture_with_the_difference(three_runs, tmp_path):
    out = tmp_path / "two"
    result = run_cli("report", three_runs[0], three_runs[2], "--out", out)
    assert result.exit_code == 0, result.output
    page = out / "index.html"
    rows = score_rows(page, 5)
    assert len(rows) == 8 and all(row[4] == row[2] - row[0] for row in rows)  # the second run's minus the first's
    for run, k in ((three_runs[0], 0), (three_runs[2], 2)):
        evaluated = json.loads(run_cli("evaluate", run, "--json").stdout)
        assert np.mean([row[k] for row in rows]) == pytest.approx(evaluated["CIDEr-D"], rel=1e-12, abs=1e-12)
    assert (out / "plots" / "compare.png").stat().st_size > 10_000
    assert "\u0394 CIDEr-D" in page.read_text() and ">lr<" in page.read_text()  # the option that differs


def test_a_bundle_of_web_pictures_links_them_and_shows_them_only_online(finished, tmp_path):
    _, _, run = finished  # its bundle lists http://example.org/val/N.jpg
    offline = run_cli("report", run, "--out", tmp_path / "offline")
    assert offline.exit_code == 0, offline.output
    found = page_images(tmp_path / "offline" / "index.html")
    assert not any(source.startswith("http") for source in found.sources)
    assert sorted(found.links) == [f"http://example.org/val/{i}.jpg" for i in range(8)]
    online = run_cli("report", run, "--out", tmp_path / "online", "--online")
    assert online.exit_code == 0, online.output
    assert sorted(s for s in page_images(tmp_path / "online" / "index.html").sources
                  if s.startswith("http")) == sorted(found.links)


@pytest.fixture(scope="module")
def pictures_run(tmp_path_factory):
    """A run on a bundle of picture files (data synth --pictures, then data import)."""
    root = tmp_path_factory.mktemp("picture_files")
    steps = [("data", "synth", root / "pictures", "--pictures", "--num-train", 30, "--num-val", 6),
             ("data", "import", root / "bundle", "--karpathy", root / "pictures" / "dataset_shapes.json", "--images",
              root / "pictures" / "images", "--encoder", "shapes"),
             ("train", "--data", root / "bundle", *options(epochs=1, eval_images=4), "--out", root / "run",
              "--quiet")]
    for step in steps:
        result = run_cli(*step)
        assert result.exit_code == 0, result.output
    return root


def test_an_imported_bundles_picture_files_are_copied_as_thumbnails(pictures_run, tmp_path):
    out = tmp_path / "files"
    result = run_cli("report", pictures_run / "run", "--out", out)
    assert result.exit_code == 0, result.output
    urls = (pictures_run / "bundle" / "val_urls.txt").read_text().splitlines()
    text = (out / "index.html").read_text()
    shown = re.findall(r'<img src="(pictures/\d+\.png)" alt="val image (\d+)">', text)
    assert len(shown) == len(urls)
    for src, image in shown:
        np.testing.assert_array_equal(read_png(out / src), thumbnail(urls[int(image)], 256))


def test_caption_html_writes_the_gallery_of_ones_own_pictures(pictures_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    hostile = "<img src=x onerror=alert(1)>.png"
    Image.new("RGB", (80, 60), (200, 40, 40)).save(photos / hostile)
    Image.new("RGB", (60, 80), (40, 40, 200)).save(photos / "b.png")
    out = tmp_path / "html"
    result = run_cli("caption", pictures_run / "run", photos, "--html", out)
    assert result.exit_code == 0, result.output
    captions = dict(line.split("\t") for line in result.stdout.splitlines())
    text = (out / "index.html").read_text()
    for name, caption in captions.items():
        assert html.escape(name) in text and html.escape(caption) in text
    assert hostile not in text and "<th>references</th>" not in text
    sources = page_images(out / "index.html").sources
    assert sorted(s for s in sources if s.startswith("pictures/")) == ["pictures/0000.png", "pictures/0001.png"]
    np.testing.assert_array_equal(read_png(out / "pictures" / "0000.png"), thumbnail(photos / hostile, 256))


def test_what_report_and_caption_html_refuse(tmp_path, finished, pictures_run, three_runs):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a picture")  # refused before it is read: its error would come first otherwise
    for args in (["report", finished[2], "--out", taken],
                 ["caption", pictures_run / "run", corrupt, "--html", taken]):
        result = run_cli(*args)
        assert result.exit_code == 1 and result.output == (f"Error: {taken}: already holds files that are not a "
                                                           "captionkit report; give a new or empty folder\n")
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    mixed = run_cli("report", finished[2], three_runs[0], "--out", tmp_path / "mixed")
    assert mixed.exit_code == 1 and "the runs were trained on different datasets" in mixed.output
    assert "--data" in mixed.output
    assert run_cli("report", tmp_path, "--out", tmp_path / "r").exit_code == 1  # not a run directory
    missing = run_cli("report", finished[2])
    assert missing.exit_code == 2 and "Missing option '--out'" in missing.output
    again = run_cli("report", finished[2], "--out", tmp_path / "again")
    assert again.exit_code == 0 and run_cli("report", finished[2], "--out", tmp_path / "again").exit_code == 0
