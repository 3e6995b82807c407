"""Image encoders: the registry, the `shapes` and `onnx` encoders against independent arithmetic, the recorded
pipeline (encoder + PCA) and its refusals.

The ONNX models are built here with onnx.helper (a convolution, ReLU and global average pooling, in several
layouts and input types), and their features are compared with the same arithmetic written in numpy.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from captionkit.cli import main
from captionkit.encoders import Encoder, EncoderError, EncoderRegistry, available_encoders, encoder_info, make_encoder
from captionkit.encoders.pipeline import EncoderRecord, FeaturePipeline, Pca, encode_files
from captionkit.encoders.registry import parse_options
from captionkit.plugins import PluginLoadError
from captionkit.synthetic import extract_features
from conftest import make_distribution

onnx = pytest.importorskip("onnx", reason="the onnx encoder tests build models with the onnx package (test extra)")
pytest.importorskip("onnxruntime", reason="the onnx encoder runs models with onnxruntime (test extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SIZE = 16
RNG = np.random.default_rng(0)
CONV_W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
CONV_B = RNG.standard_normal(4).astype(np.float32)


def pictures(count, height=SIZE, width=SIZE, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def conv_relu(x):
    """numpy oracle: 3x3 convolution with padding 1, bias, ReLU: x (N, 3, H, W) -> (N, 4, H, W)."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # (N, 3, H, W, 3, 3)
    return np.maximum(np.einsum("nchwij,ocij->nohw", windows, CONV_W) + CONV_B[None, :, None, None], 0)


def oracle(images, scale=1 / 255, low=0.0, mean=(0, 0, 0), std=(1, 1, 1), bgr=False):
    x = np.stack(images).astype(np.float64)
    if bgr:
        x = x[..., ::-1]
    x = (x * scale + low - np.asarray(mean)) / np.asarray(std)
    return conv_relu(x.transpose(0, 3, 1, 2))


def save_model(path, input_shape, *, layout="nchw", input_type=TensorProto.FLOAT, metadata=None, batch="N",
               extra_outputs=()):
    """A convolution + ReLU + global average pooling model: outputs ``features`` (N, 4) and ``map`` (N, 4, H, W)."""
    nodes, source = [], "x"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["x_float"], to=TensorProto.FLOAT))
        source = "x_float"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", [source], ["x_nchw"], perm=[0, 3, 1, 2]))
        source = "x_nchw"
    nodes += [helper.make_node("Conv", [source, "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["conv"], ["map"]),
              helper.make_node("GlobalAveragePool", ["map"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["features"])]
    outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 4]),
               helper.make_tensor_value_info("map", TensorProto.FLOAT, [batch, 4, "h", "w"]), *extra_outputs]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", input_type, [batch, *input_shape])],
                              outputs, [numpy_helper.from_array(CONV_W, "W"), numpy_helper.from_array(CONV_B, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cnn(tmp_path):
    return save_model(tmp_path / "cnn.onnx", [3, SIZE, SIZE])


# ---------------------------------------------------------------------------------------------- registry
def test_built_in_encoders_are_listed_and_load():
    assert {"onnx", "shapes"} <= set(available_encoders())
    infos = {info.name: info for info in encoder_info()}
    assert infos["shapes"].loads and infos["shapes"].loaded.output_dim == 512
    assert infos["onnx"].loads and infos["onnx"].loaded.output_dim is None
    assert infos["shapes"].distribution == "captionkit"


def test_an_encoder_plugin_not_installed_says_how_to_get_it():
    registry = EncoderRegistry(autoload_plugins=False)
    with pytest.raises(EncoderError, match=r"unknown encoder 'resnet50'.*plugin distribution captionkit-torchvision"):
        registry.load("resnet50")


@pytest.mark.parametrize("spec, options, message", [
    ("shapes:extra", {}, "encoder 'shapes' takes no argument, got 'extra'"),
    ("onnx", {}, r"encoder 'onnx' needs an argument: onnx:PATH\[:OUTPUT\]"),
    ("onnx:", {}, "nothing after ':'"),
    ("shapes", {"size": "3"}, r"encoder 'shapes' has no option 'size' \(its options: grid\)"),
    ("", {}, "an encoder is named NAME or NAME:ARGUMENT"),
    ("nope", {}, "unknown encoder 'nope'; registered encoders: .*onnx.*shapes"),
])
def test_bad_encoder_names_are_refused(spec, options, message):
    with pytest.raises(EncoderError, match=message):
        make_encoder(spec, options)


def test_options_are_key_value_pairs():
    assert parse_options(["size=224", " mean = 1,2,3"]) == {"size": "224", "mean": "1,2,3"}
    with pytest.raises(EncoderError, match="'size' is not KEY=VALUE"):
        parse_options(["size"])
    with pytest.raises(EncoderError, match="'size' is given twice"):
        parse_options(["size=1", "size=2"])


PLUGIN = """
import numpy as np
from captionkit.encoders import Encoder

class Mean(Encoder):
    output_dim = 3
    summary = "mean colour"
    def encode(self, images):
        return np.stack([image.reshape(-1, 3).mean(axis=0) for image in images]).astype(np.float32)

class NeedsLibrary(Mean):
    @classmethod
    def requirements_problem(cls):
        return "it needs ck_fake_library, which is not installed"

class BadWidth(Mean):
    output_dim = 0
"""


def test_encoder_plugins_come_from_entry_points_and_failures_name_the_distribution(plugin_root, monkeypatch):
    make_distribution(plugin_root, "fake-encoders", "2.1",
                      {"meancolour": "ck_fake_enc:Mean", "needslib": "ck_fake_enc:NeedsLibrary",
                       "badwidth": "ck_fake_enc:BadWidth"}, {"ck_fake_enc": PLUGIN}, group="captionkit.encoders")
    registry = EncoderRegistry()
    encoder = registry.load("meancolour")(None, {})
    np.testing.assert_allclose(encoder.encode([np.full((2, 2, 3), 6, np.uint8)]), [[6, 6, 6]])
    with pytest.raises(PluginLoadError, match=r"'needslib' from distribution fake-encoders 2\.1 .*ck_fake_library"):
        registry.load("needslib")
    with pytest.raises(PluginLoadError, match=r"fake-encoders 2\.1.*output_dim is 0"):
        registry.load("badwidth")
    # `captionkit encoders` lists them with what does not load.
    monkeypatch.setattr("captionkit.encoders.registry._default_registry", registry)
    result = CliRunner().invoke(main, ["encoders"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert rows["meancolour"][1:5] == ["fake-encoders", "2.1", "3", "yes"]
    assert rows["needslib"][4] == "NO" and "ck_fake_library" in result.output


# ---------------------------------------------------------------------------------------------- shapes
def test_shapes_gives_the_built_in_features_for_any_size():
    small = pictures(3, 64, 64)
    encoder = make_encoder("shapes")
    np.testing.assert_array_equal(encoder.encode(small), extract_features(np.stack(small)))
    # Enlarged by whole factors with repeated pixels, and shrunk back by area averaging: the same pixels.
    enlarged = [np.repeat(np.repeat(p, k, axis=0), k, axis=1) for p, k in zip(small, (2, 3, 5))]
    np.testing.assert_array_equal(encoder.encode(enlarged), extract_features(np.stack(small)))
    odd = encoder.encode(pictures(2, 100, 37))
    assert odd.shape == (2, 512) and np.isfinite(odd).all()


# ---------------------------------------------------------------------------------------------- onnx
def test_onnx_features_equal_the_numpy_arithmetic(cnn):
    images = pictures(5)
    encoder = make_encoder(f"onnx:{cnn}")
    assert encoder.dim == 4
    np.testing.assert_allclose(encoder.encode(images), oracle(images).mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)
    # A 4-D output is averaged over its spatial positions.
    feature_map = make_encoder(f"onnx:{cnn}:map")
    np.testing.assert_allclose(feature_map.encode(images), oracle(images).mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)


def test_onnx_normalisation_from_the_file_and_from_options(tmp_path):
    images = pictures(3)
    metadata = {"Image.NominalPixelRange": "NominalRange_0_255", "mean": "120,110,100", "std": "60,50,40",
                "Image.BitmapPixelFormat": "Bgr8"}
    from_file = make_encoder(f"onnx:{save_model(tmp_path / 'meta.onnx', [3, SIZE, SIZE], metadata=metadata)}")
    expected = oracle(images, scale=1.0, mean=(120, 110, 100), std=(60, 50, 40), bgr=True).mean(axis=(2, 3))
    np.testing.assert_allclose(from_file.encode(images), expected, rtol=1e-5, atol=1e-5)

    options = {"range": "-1,1", "mean": "0.1,0.2,0.3", "std": "0.5", "channels": "rgb"}
    given = make_encoder(f"onnx:{tmp_path / 'meta.onnx'}", options)
    expected = oracle(images, scale=2 / 255, low=-1.0, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5)).mean(axis=(2, 3))
    np.testing.assert_allclose(given.encode(images), expected, rtol=1e-5, atol=1e-5)
    assert "pixels scaled to [-1, 1], mean 0.1, 0.2, 0.3, std 0.5, 0.5, 0.5" in given.describe()


@pytest.mark.parametrize("layout, input_type, shape, batch", [
    ("nhwc", TensorProto.FLOAT, [SIZE, SIZE, 3], "N"),
    ("nchw", TensorProto.UINT8, [3, SIZE, SIZE], "N"),
    ("nchw", TensorProto.DOUBLE, [3, SIZE, SIZE], "N"),
    ("nchw", TensorProto.FLOAT, [3, SIZE, SIZE], 1),  # a model exported for one picture at a time
    ("nchw", TensorProto.FLOAT, [3, SIZE, SIZE], 4),  # ... or for batches of four (the last one is padded)
])
def test_onnx_input_layouts_types_and_batch_sizes(tmp_path, layout, input_type, shape, batch):
    images = pictures(7)
    path = save_model(tmp_path / "m.onnx", shape, layout=layout, input_type=input_type, batch=batch)
    encoder = make_encoder(f"onnx:{path}")
    scale = 1.0 if input_type == TensorProto.UINT8 else 1 / 255
    np.testing.assert_allclose(encoder.encode(images), oracle(images, scale=scale).mean(axis=(2, 3)), rtol=1e-5,
                               atol=1e-4)


def test_onnx_pictures_of_other_sizes_are_cropped_or_stretched(cnn):
    # A 16x16 pattern enlarged 2x into 32x48: cropping takes its central 16 columns of the pattern's 24 ...
    pattern = pictures(1, SIZE, 24)[0]
    enlarged = np.repeat(np.repeat(pattern, 2, axis=0), 2, axis=1)
    cropped = make_encoder(f"onnx:{cnn}").encode([enlarged])
    np.testing.assert_allclose(cropped, oracle([pattern[:, 4:20]]).mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)
    # ... stretching squeezes the whole picture in (here: 32x32 back to 16x16 exactly).
    square = np.repeat(np.repeat(pictures(1)[0], 2, axis=0), 2, axis=1)
    stretched = make_encoder(f"onnx:{cnn}", {"resize": "stretch"}).encode([square])
    np.testing.assert_allclose(stretched, oracle(pictures(1)).mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)


def test_onnx_model_of_any_size_needs_a_size(tmp_path):
    path = save_model(tmp_path / "any.onnx", [3, "H", "W"])
    with pytest.raises(EncoderError, match=r"takes pictures of any size.*--encoder-option size=HEIGHT\[xWIDTH\]"):
        make_encoder(f"onnx:{path}")
    images = pictures(2, 12, 20)
    encoder = make_encoder(f"onnx:{path}", {"size": "12x20"})
    np.testing.assert_allclose(encoder.encode(images), oracle(images).mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)


def _flat_model(path):
    """A model of any input size whose MatMul only fits 16x16 pictures: a wrong size fails when run."""
    weight = RNG.standard_normal((3 * SIZE * SIZE, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["y"])], "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, weight


def _no_image_input(path):
    graph = helper.make_graph([helper.make_node("Relu", ["v"], ["y"])], "vector",
                              [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _sequence_output(path):
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "seq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, SIZE * SIZE])],
                              [numpy_helper.from_array(np.array([0, 3, -1], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_flat_model_runs_at_its_size(tmp_path):
    path, weight = _flat_model(tmp_path / "flat.onnx")
    images = pictures(2)
    encoder = make_encoder(f"onnx:{path}", {"size": str(SIZE)})
    expected = (np.stack(images).astype(np.float64) / 255).transpose(0, 3, 1, 2).reshape(2, -1) @ weight
    np.testing.assert_allclose(encoder.encode(images), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("setup, options, message", [
    (lambda d: d / "nowhere.onnx", {}, r"nowhere\.onnx: file not found"),
    (lambda d: d, {}, r": not a file"),
    (lambda d: (d / "text.onnx").write_text("hello") and d / "text.onnx", {},
     r"text\.onnx: not an ONNX model onnxruntime can load"),
    (lambda d: save_model(d / "m.onnx", [3, SIZE, SIZE]), {"size": "32"},
     r"m\.onnx: input 'x' takes 16x16 pictures, but size=32 was asked for"),
    (lambda d: _flat_model(d / "flat.onnx")[0], {"size": "20"},
     r"flat\.onnx: running the model on 1 pictures of 20x20 failed \(.+\)"),
    (lambda d: _no_image_input(d / "vector.onnx"), {},
     r"vector\.onnx: no image input .* among its inputs: v \(tensor\(float\), \['N', 10\]\)"),
    (lambda d: _sequence_output(d / "seq.onnx"), {},
     r"seq\.onnx: output 'y' has shape \(1, 3, 256\); captionkit takes \(N, D\) vectors"),
    (lambda d: save_model(d / "m.onnx", [3, SIZE, SIZE]), {"std": "1,0,1"}, r"std must not be 0"),
    (lambda d: save_model(d / "m.onnx", [3, SIZE, SIZE]), {"mean": "1,2"}, r"mean must be 3 comma-separated"),
    (lambda d: save_model(d / "m.onnx", [3, SIZE, SIZE]), {"resize": "zoom"}, r"resize must be one of crop"),
    (lambda d: save_model(d / "m.onnx", [3, SIZE, SIZE]), {"colour": "x"}, r"has no option 'colour'"),
    (lambda d: save_model(d / "u8.onnx", [3, SIZE, SIZE], input_type=TensorProto.UINT8), {"mean": "1"},
     r"takes uint8 pixels as they are"),
])
def test_onnx_errors_name_the_file_and_the_problem(tmp_path, setup, options, message):
    path = setup(tmp_path)
    with pytest.raises(EncoderError, match=message):
        make_encoder(f"onnx:{path}", options)


def test_onnx_output_that_does_not_exist_is_named(cnn):
    with pytest.raises(EncoderError, match=r"no output named 'logits' \(outputs: features .*map"):
        make_encoder(f"onnx:{cnn}:logits")


# ---------------------------------------------------------------------------------------------- pipeline
def test_pca_matches_the_singular_value_decomposition():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12)) + rng.standard_normal(12)
    pca = Pca.fit(features, 5)
    centred = features - features.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    for k in range(5):  # the same directions up to sign
        assert abs(abs(pca.components[k] @ vt[k]) - 1) < 1e-9
    reduced = pca.transform(features)
    np.testing.assert_allclose(np.abs(reduced), np.abs(centred @ vt[:5].T), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=0), singular[:5], rtol=1e-5)
    with pytest.raises(ValueError, match=r"--pca 13: .*min\(200, 12\)"):
        Pca.fit(features, 13)


def test_a_recorded_onnx_pipeline_is_rebuilt_and_a_changed_file_refused(cnn, tmp_path):
    encoder = make_encoder(f"onnx:{cnn}", {"mean": "0.5"})
    EncoderRecord.of(encoder).save(tmp_path / "encoder.json")
    pipeline = FeaturePipeline.load(tmp_path)
    paths = []
    for k, image in enumerate(pictures(3)):
        from PIL import Image

        Image.fromarray(image).save(tmp_path / f"{k}.png")
        paths.append(tmp_path / f"{k}.png")
    np.testing.assert_array_equal(pipeline.encode_files(paths), encoder.encode(pictures(3)))
    assert pipeline.record.options == {"mean": "0.5"}

    global CONV_B
    saved, CONV_B = CONV_B, CONV_B + 1  # the same file name, other weights
    try:
        save_model(cnn, [3, SIZE, SIZE])
    finally:
        CONV_B = saved
    with pytest.raises(EncoderError, match=r"encoder.json: encoder 'onnx:.*cnn\.onnx' no longer gives the features "
                                           r"recorded: sha256 was '[0-9a-f]{64}', it is now '[0-9a-f]{64}'"):
        FeaturePipeline.load(tmp_path)


def test_encoder_records_are_checked_when_read(tmp_path):
    path = tmp_path / "encoder.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(EncoderError, match="not a captionkit encoder record"):
        EncoderRecord.load(path)
    good = EncoderRecord.of(make_encoder("shapes")).to_dict()
    path.write_text(json.dumps({"format": "captionkit-encoder", "format_version": 1, **good, "output_dim": "512"}))
    with pytest.raises(EncoderError, match="'output_dim' must be a int"):
        EncoderRecord.load(path)


def test_encode_files_reports_unreadable_files_when_asked(tmp_path):
    from PIL import Image

    Image.fromarray(pictures(1, 64, 64)[0]).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    encoder = make_encoder("shapes")
    features, skipped = encode_files(encoder, [tmp_path / "bad.png", tmp_path / "good.png"], skip_unreadable=True)
    assert [row for row, _ in skipped] == [0] and "bad.png" in skipped[0][1]
    assert np.isnan(features[0]).all() and np.isfinite(features[1]).all()
    from captionkit.images import ImageFileError

    with pytest.raises(ImageFileError, match=r"bad\.png"):
        encode_files(encoder, [tmp_path / "good.png", tmp_path / "bad.png"])


class _Wrong(Encoder):
    output_dim = 3

    def encode(self, images):
        return np.zeros((len(images), 2))


def test_an_encoder_returning_the_wrong_shape_is_named(tmp_path):
    from PIL import Image

    Image.fromarray(pictures(1)[0]).save(tmp_path / "p.png")
    with pytest.raises(EncoderError, match=r"returned float64 \(1, 2\) for 1 images, expected floats of shape "
                                           r"\(1, 3\)"):
        encode_files(_Wrong(), [tmp_path / "p.png"])
