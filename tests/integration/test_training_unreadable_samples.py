"""A run on an imported bundle whose sample pictures became unreadable after the import still ends whole.

The pictures are the built-in dataset's scenes as PNG files, imported with the `shapes` encoder; then one validation
picture is replaced by a decompression bomb (a 60-byte PNG declaring 20000 x 20000 pixels, which Pillow refuses
when opening it) and another by bytes that are no picture. Training only reads the bundle's features, so it runs;
the samples grid must leave the two pictures out with a note, and summary.json must be written.
"""
import json
import struct
import zlib

from click.testing import CliRunner

from captionkit.cli import main
from captionkit.runs import RunDirectory


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width=20000, height=20000):
    """A valid PNG header declaring ``width`` x ``height`` one-bit pixels, with one row of data."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 8))
            + _chunk(b"IEND", b""))


def test_unreadable_sample_pictures_are_left_out_and_the_run_ends_whole(tmp_path):
    result = invoke("data", "synth", tmp_path / "synth", "--pictures", "--num-train", 24, "--num-val", 3, "--seed", 2)
    assert result.exit_code == 0, result.output
    result = invoke("data", "import", tmp_path / "bundle", "--karpathy", tmp_path / "synth" / "dataset_shapes.json",
                    "--images", tmp_path / "synth" / "images", "--encoder", "shapes", "--min-count", 1)
    assert result.exit_code == 0, result.output
    val_urls = (tmp_path / "bundle" / "val_urls.txt").read_text().split()
    bomb, garbage, intact = val_urls
    with open(bomb, "wb") as f:
        f.write(bomb_png())
    with open(garbage, "wb") as f:
        f.write(b"this is not a picture any more")

    out = tmp_path / "run"
    result = invoke("train", "--data", tmp_path / "bundle", "--out", out, "--hidden-dim", 12, "--wordvec-dim", 8,
                    "--batch-size", 8, "--epochs", 1, "--eval-images", 3, "--num-samples", 3)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "samples.png: val image" in line]
    assert len(notes) == 2, result.output
    assert any(bomb in line for line in notes) and any(garbage in line for line in notes)
    assert not any(intact in line for line in notes)
    run = RunDirectory(out)
    summary = json.loads(run.summary.read_text())
    assert summary["iteration"] == summary["num_iterations"] > 0
    assert run.samples_grid.is_file()  # drawn from the one picture still readable
    assert len([line for line in run.samples_text.read_text().splitlines() if line.startswith("val image")]) == 3

    resumed = invoke("train", "--resume", out)  # the run is whole: resuming finds it finished
    assert resumed.exit_code == 0 and "is finished at iteration" in resumed.output, resumed.output
