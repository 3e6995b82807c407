"""`captionkit caption`: what it refuses, each in one line naming the run, the picture or the option (captions of
real pictures are checked end to end in integration/test_own_data.py).

Oracles: the run and files the test arranges, and the messages captionkit promises for them.
"""
import pytest

from training_helpers import run_cli


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"not really a picture")
    return path


def test_a_run_without_an_image_encoder_is_refused_with_the_reason(finished, picture):
    _, _, run = finished  # trained on a bundle of stand-in features, which no encoder makes from pictures
    result = run_cli("caption", run, picture)
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert f"{run}: this run records no image encoder (encoder.json)" in result.output


def test_a_folder_that_is_not_a_run_is_named(tmp_path, picture):
    result = run_cli("caption", tmp_path / "nothing", picture)
    assert result.exit_code == 1
    assert result.output == (f"Error: {tmp_path / 'nothing'}: not inside a run directory (RUN/checkpoints/ckpt-*.npz);"
                             " captions need the run's encoder.json\n")


def test_a_missing_picture_is_named(finished, tmp_path):
    _, _, run = finished
    result = run_cli("caption", run, tmp_path / "missing.jpg")
    assert result.exit_code == 1 and result.output == f"Error: {tmp_path / 'missing.jpg'}: file not found\n"


@pytest.mark.parametrize("args, option", [(["--beam", "0"], "--beam"), (["--max-length", "0"], "--max-length"),
                                          (["--length-penalty", "nan"], "--length-penalty")])
def test_bad_options_are_usage_errors_naming_the_option(finished, picture, args, option):
    _, _, run = finished
    result = run_cli("caption", run, picture, *args)
    assert result.exit_code == 2 and f"'{option}'" in result.output


def test_pictures_are_required(finished):
    result = run_cli("caption", finished[2])
    assert result.exit_code == 2 and "Missing argument 'IMAGE_OR_DIR...'" in result.output
