"""The torchvision encoders make each picture small as it is read (issue #23 item 1), and keep refusing what the
issue's attack tried (item 16 and pickled payloads in torch's cache).

The oracle is torchvision's own evaluation transform (``weights.transforms()``) on the whole picture: the square an
encoder reduces a picture to must give the transform the same tensor. From the command line: `data import` and
`caption` with a torchvision encoder hand the network model-sized pictures only, and refuse a picture over
``--max-picture-pixels``. Random weights (``weights=none``), an empty TORCH_HOME and a torch.hub whose download
raises: nothing is downloaded. Without torch and torchvision every test here skips, saying so.

Run with ``python -m pytest plugins/captionkit-torchvision/tests``.
"""
import hashlib
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PLUGIN_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PLUGIN_DIR))

torch = pytest.importorskip("torch", reason="the torchvision encoders run torch (not installed)")
torchvision = pytest.importorskip("torchvision", reason="the torchvision encoders need torchvision (not installed)")

from click.testing import CliRunner  # noqa: E402

import captionkit.encoders.pipeline as pipeline  # noqa: E402
from captionkit.cli import main  # noqa: E402
from captionkit.encoders import EncoderError  # noqa: E402
from captionkit_torchvision import ResNet50Encoder, VGG16Encoder, weights_digest  # noqa: E402
from captionkit_torchvision.encoders import MAX_ELONGATION  # noqa: E402

ENCODERS = [(ResNet50Encoder, {}), (ResNet50Encoder, {"grid": "yes"}), (VGG16Encoder, {}),
            (VGG16Encoder, {"grid": "yes"})]
ENCODER_IDS = ["resnet50", "resnet50-grid", "vgg16", "vgg16-grid"]


@pytest.fixture(scope="module", params=ENCODERS, ids=ENCODER_IDS)
def encoder(request):
    encoder_class, options = request.param
    return encoder_class(None, {"weights": "none", **options})


def noise(rows, cols, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (rows, cols, 3), dtype=np.uint8)


def transformed(encoder, picture):
    """The tensor the weights' own transform makes of ``picture``: what the network is given."""
    return encoder.transform(Image.fromarray(picture))


# ---------------------------------------------------------------------------------------------- the square
def test_the_decode_size_is_the_resize_size():
    assert ResNet50Encoder(None, {"weights": "none"}).decode_size == (232, 232)
    assert VGG16Encoder(None, {"weights": "none"}).decode_size == (256, 256)


# Portrait and landscape, odd sizes, squares smaller and larger than the square, one pixel, a side at the square's
# length, and pictures 16 times as long as wide (the longest resized whole).
SHAPES = [(300, 200), (180, 240), (375, 500), (500, 375), (999, 1001), (1000, 1000), (1, 1), (5, 3), (224, 224),
          (231, 232), (232, 233), (257, 256), (240, 260), (57, 900), (900, 57), (20, 320), (320, 20), (3, 48)]


@pytest.mark.parametrize("rows, cols", SHAPES)
def test_the_square_gives_the_transform_the_same_tensor_as_the_whole_picture(encoder, rows, cols):
    picture = noise(rows, cols, seed=rows * 7 + cols)
    square = encoder.reduce(picture)
    side = encoder.decode_size[0]
    assert square.shape == (side, side, 3) and square.dtype == np.uint8
    assert torch.equal(transformed(encoder, square), transformed(encoder, picture))
    assert encoder.reduce(square) is square  # a reduced picture is left as it is


@pytest.mark.parametrize("rows, cols", [(3, 700), (700, 3), (57, 2000), (2000, 57), (19, 320), (320, 19),
                                        (1, 5000), (5000, 1)])
def test_a_longer_strip_is_resampled_to_the_square_within_one_level(encoder, rows, cols):
    assert max(rows, cols) > MAX_ELONGATION * min(rows, cols)
    picture = noise(rows, cols, seed=rows + 3 * cols)
    square = encoder.reduce(picture)
    side = encoder.decode_size[0]
    assert square.shape == (side, side, 3)
    # Back to levels of 255: the transform's tensor is (level / 255 - mean) / std.
    std = torch.tensor(encoder.transform.std).reshape(3, 1, 1)
    levels = (transformed(encoder, square) - transformed(encoder, picture)) * std * 255
    assert levels.abs().max().item() < 1.001
    assert (levels.abs() > 0.5).float().mean().item() < 0.03  # measured: at most 1.7% of the values, one level off


def test_a_strip_too_long_to_resize_whole_becomes_the_square():
    """1 x 3,000,000 pixels: resized whole it would be 232 x 696,000,000 (2.6 TB as RGBA): it is never made."""
    encoder = ResNet50Encoder(None, {"weights": "none"})
    strip = np.empty((1, 3_000_000, 3), dtype=np.uint8)
    strip[:] = (200, 30, 90)
    square = encoder.reduce(strip)
    assert square.shape == (232, 232, 3)
    assert (square == (200, 30, 90)).all()  # one colour resampled is that colour
    tall = encoder.reduce(np.ascontiguousarray(strip.transpose(1, 0, 2)))
    assert tall.shape == (232, 232, 3) and (tall == (200, 30, 90)).all()


@pytest.mark.parametrize("picture, message", [
    (np.zeros((0, 5, 3), np.uint8), r"non-empty \(H, W, 3\) uint8 RGB arrays, got uint8 \(0, 5, 3\)"),
    (np.zeros((4, 4), np.uint8), r"got uint8 \(4, 4\)"),
    (np.zeros((4, 4, 3), np.float32), r"got float32 \(4, 4, 3\)"),
])
def test_a_picture_that_is_not_rgb_is_refused_naming_its_shape(picture, message):
    with pytest.raises(EncoderError, match=message):
        ResNet50Encoder(None, {"weights": "none"}).reduce(picture)


# ---------------------------------------------------------------------------------------------- picture files
def save(path, picture, **kwargs):
    Image.fromarray(picture).save(path, **kwargs)
    return path


def watch(monkeypatch, encoder):
    """The shapes of the pictures read (``decoded``) and of those handed to the network (``encoded``)."""
    seen = {"decoded": [], "encoded": []}
    read_image, encode = pipeline.read_image, encoder.encode

    def recording_read(*args):
        picture = read_image(*args)
        seen["decoded"].append(picture.shape)
        return picture

    def recording_encode(pictures):
        seen["encoded"].extend(picture.shape for picture in pictures)
        return encode(pictures)

    monkeypatch.setattr(pipeline, "read_image", recording_read)
    monkeypatch.setattr(encoder, "encode", recording_encode, raising=False)
    return seen


def test_a_batch_of_files_holds_model_sized_pictures_only(tmp_path, monkeypatch, encoder):
    pictures = [noise(300, 200, 1), noise(180, 240, 2), noise(40, 1200, 3), noise(1, 1, 4)]
    paths = [save(tmp_path / f"{k}.png", picture) for k, picture in enumerate(pictures)]
    expected = encoder.encode(pictures)
    seen = watch(monkeypatch, encoder)
    features = pipeline.encode_files(encoder, paths)
    side = encoder.decode_size[0]
    assert seen["decoded"] == [picture.shape for picture in pictures]  # PNG has no reduced scales
    assert seen["encoded"] == [(side, side, 3)] * len(pictures)
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)


def test_a_jpeg_is_decoded_at_the_smallest_scale_covering_the_resize(tmp_path, monkeypatch, encoder):
    photo = save(tmp_path / "photo.jpg", noise(3000, 4000, 5), quality=90)
    seen = watch(monkeypatch, encoder)
    pipeline.encode_files(encoder, [photo])
    side = encoder.decode_size[0]
    # 1/8 (JPEG's smallest scale): 500 x 375, both sides still at least 232 and 256.
    assert seen["decoded"] == [(375, 500, 3)] and seen["encoded"] == [(side, side, 3)]


# ---------------------------------------------------------------------------------------------- the command line
def run_cli(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def resnet50_run(tmp_path_factory):
    """A bundle imported with resnet50 (random weights) from six PNGs, and a run trained on it briefly."""
    root = tmp_path_factory.mktemp("resnet50-run")
    (root / "images").mkdir()
    rows = ["image,caption"]
    for k in range(6):
        save(root / "images" / f"{k}.png", noise(120 + 10 * k, 160, 10 + k))
        rows.append(f"{k}.png,a picture of noise number {k % 2}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    result = run_cli("data", "import", root / "bundle", "--captions", root / "captions.csv", "--images",
                     root / "images", "--encoder", "resnet50", "--encoder-option", "weights=none")
    assert result.exit_code == 0, result.output
    result = run_cli("train", "--data", root / "bundle", "--epochs", 1, "--hidden-dim", 8, "--wordvec-dim", 8,
                     "--batch-size", 4, "--eval-images", 1, "--num-samples", 1, "--out", root / "run")
    assert result.exit_code == 0, result.output
    return root


def test_data_import_refuses_a_picture_over_the_pixel_limit_naming_it(resnet50_run, tmp_path):
    images = resnet50_run / "images"
    big = save(images / "big.png", noise(300, 400, 20))  # 120,000 pixels
    table = tmp_path / "captions.csv"
    table.write_text("image,caption,split\n" + "".join(f"{k}.png,a picture,{'val' if k == 5 else 'train'}\n"
                                                        for k in range(6)) + "big.png,a big one,train\n")
    try:
        result = run_cli("data", "import", tmp_path / "refused", "--captions", table, "--images", images,
                         "--encoder", "resnet50", "--encoder-option", "weights=none", "--max-picture-pixels", 100000)
        assert result.exit_code != 0
        assert f"{big}: picture too large (400 x 300 > 100,000 pixels" in result.output
        assert not (tmp_path / "refused").exists()
        result = run_cli("data", "import", tmp_path / "kept", "--captions", table, "--images", images,
                         "--encoder", "resnet50", "--encoder-option", "weights=none", "--max-picture-pixels", 100000,
                         "--skip-missing")
        assert result.exit_code == 0, result.output
        assert "picture too large" in (tmp_path / "kept" / "import.json").read_text()
    finally:
        big.unlink()


def test_caption_skips_a_picture_over_the_pixel_limit_and_encodes_the_others_model_sized(resnet50_run, tmp_path,
                                                                                         monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    save(photos / "photo.jpg", noise(3000, 4000, 21), quality=90)  # 12 megapixels, decoded at 1/8
    save(photos / "wide.png", noise(60, 1500, 22))
    big = save(photos / "big.png", np.zeros((3500, 4000, 3), np.uint8))  # 14 megapixels
    shapes = []
    encode = ResNet50Encoder.encode
    monkeypatch.setattr(ResNet50Encoder, "encode",
                        lambda self, pictures: shapes.extend(p.shape for p in pictures) or encode(self, pictures))
    result = run_cli("caption", resnet50_run / "run", photos, "--max-picture-pixels", 13_000_000, "--skip-unreadable")
    assert result.exit_code == 0, result.output
    assert "photo.jpg\t" in result.output and "wide.png\t" in result.output
    assert f"{big}" in result.output and "picture too large (4000 x 3500 > 13,000,000 pixels" in result.output
    assert shapes == [(232, 232, 3)] * 2  # the two readable pictures, in one batch, each the square


# ---------------------------------------------------------------------------------------------- torch's cache
@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty TORCH_HOME (its checkpoints folder returned) and a torch.hub whose download raises."""
    import torch.hub

    def no_download(url, dst, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def test_other_weights_under_the_official_name_are_refused_by_their_digest(offline):
    """Item 16: a ResNet-50 state dict that is not the published one, put in the cache under its name."""
    torch.manual_seed(1)
    placed = offline / "resnet50-11ad3fa6.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), placed)
    found = hashlib.sha256(placed.read_bytes()).hexdigest()
    with pytest.raises(EncoderError, match=rf"{placed}: the file's SHA-256 is {found[:8]}\.\.\., not the 11ad3fa6 "
                                           r"its name says: it is not the published weights"):
        ResNet50Encoder(None, {})


def test_the_digest_is_checked_against_the_prefix_in_the_name(tmp_path):
    payload = b"weights"
    digest = hashlib.sha256(payload).hexdigest()
    named = tmp_path / f"net-{digest[:10]}.pth"
    named.write_bytes(payload)
    assert weights_digest(named) == digest
    (tmp_path / "net-00000000.pth").write_bytes(payload)
    with pytest.raises(EncoderError, match=r"net-00000000\.pth: the file's SHA-256 is "):
        weights_digest(tmp_path / "net-00000000.pth")
    (tmp_path / "net.pth").write_bytes(payload)
    with pytest.raises(EncoderError, match=r"net\.pth: the weights file's name carries no SHA-256 prefix"):
        weights_digest(tmp_path / "net.pth")


class _Payload:
    """Unpickling it would create the file ``marker``: what a crafted checkpoint could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickled_payload_in_the_cache_is_never_run(offline, monkeypatch):
    """Under the official name, the digest refuses it first; were its name's 32-bit prefix ever matched, torch's
    weights-only loading still refuses to run it."""
    marker = offline.parent / "payload-ran"
    placed = offline / "resnet50-11ad3fa6.pth"
    torch.save({"conv1.weight": _Payload(marker)}, placed)
    with pytest.raises(EncoderError, match="it is not the published weights"):
        ResNet50Encoder(None, {})
    assert not marker.exists()
    # A matched prefix, simulated: the digest check passes and the file reaches torch.load.
    monkeypatch.setattr("captionkit_torchvision.encoders.weights_digest", lambda path: "11ad3fa6" + "0" * 56)
    with pytest.raises(EncoderError, match=rf"the weights file {placed} cannot be used \(.*[Ww]eights only load"):
        ResNet50Encoder(None, {})
    assert not marker.exists()
