"""The encoders' side of issue #23: sizes refused before they are allocated (item 4), external-data weights in the
ONNX encoder's identity (item 8) and onnxruntime refusing data outside the model's folder (item 17), a blank picture
alone in the shapes encoder's batch (item 9), the resolved model path recorded (item 15), and torchvision weights in
torch's cache checked against their name (item 16, without torch: a fake file)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from captionkit.encoders.base import EncoderError
from captionkit.encoders.pipeline import EncoderRecord, FeaturePipeline
from captionkit.encoders.registry import make_encoder
from captionkit.encoders.shapes import ShapesEncoder

onnx = pytest.importorskip("onnx", reason="the onnx tests build models with the onnx package")
pytest.importorskip("onnxruntime", reason="the onnx encoder runs models with onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

WEIGHTS = np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3) / 100


def conv_model(path, input_shape=("N", 3, 8, 8), output_shape=("N", 4), external=None):
    """Conv + global average pooling; ``external``: keep the weights in that file beside the model."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["map"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["map"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["features"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, output_shape)],
                              [numpy_helper.from_array(WEIGHTS, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if external is None:
        onnx.save(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, location=external, size_threshold=0)
    return path


@pytest.mark.parametrize("options, message", [
    ({"size": "100000"}, r"100000x100000, more than the 4096 pixels a side"),
    ({"size": "4000x300000"}, r"4000x300000, more than the 4096 pixels a side"),
])
def test_absurd_input_sizes_are_refused_before_allocating(tmp_path, options, message):
    model = conv_model(tmp_path / "any.onnx", input_shape=("N", 3, "h", "w"))
    with pytest.raises(EncoderError, match=message):
        make_encoder(f"onnx:{model}", options)


def test_a_model_declaring_a_huge_input_or_batch_is_refused(tmp_path):
    with pytest.raises(EncoderError, match=r"100000x100000, more than the 4096 pixels a side"):
        make_encoder(f"onnx:{conv_model(tmp_path / 'wide.onnx', input_shape=(1, 3, 100000, 100000))}")
    # 512 pictures of 1024x1024 floats are 6 GiB a run.
    with pytest.raises(EncoderError, match=r"batches of 512 pictures of 1024x1024: 6,144 MiB a run, more than"):
        make_encoder(f"onnx:{conv_model(tmp_path / 'batch.onnx', input_shape=(512, 3, 1024, 1024))}")


def test_a_crafted_record_cannot_make_the_encoder_allocate(tmp_path):
    model = conv_model(tmp_path / "any.onnx", input_shape=("N", 3, "h", "w"))
    encoder = make_encoder(f"onnx:{model}", {"size": "8"})
    EncoderRecord.of(encoder).save(tmp_path / "encoder.json")
    record = json.loads((tmp_path / "encoder.json").read_text())
    record["options"]["size"] = "100000"
    (tmp_path / "encoder.json").write_text(json.dumps(record))
    with pytest.raises(EncoderError, match="more than the 4096 pixels a side"):
        FeaturePipeline.load(tmp_path)


def wide_output_model(path, width):
    """x (N, 3, 8, 8) -> its mean expanded to (N, width): a model whose output is as wide as it says."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["mean", "axis"], ["column"]),
             helper.make_node("Expand", ["column", "shape"], ["features"])]
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
                              [numpy_helper.from_array(np.array([1], np.int64), "axis"),
                               numpy_helper.from_array(np.array([1, width], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_huge_output_is_refused_before_the_model_runs(tmp_path):
    assert make_encoder(f"onnx:{wide_output_model(tmp_path / 'ok.onnx', 16)}").dim == 16
    model = wide_output_model(tmp_path / "wide_out.onnx", 400_000_000)
    with pytest.raises(EncoderError, match=r"400000000 values wide, more than the 65536"):
        make_encoder(f"onnx:{model}")


def test_a_dynamic_batch_shrinks_for_large_pictures(tmp_path):
    model = conv_model(tmp_path / "any.onnx", input_shape=("N", 3, "h", "w"))
    assert make_encoder(f"onnx:{model}", {"size": "224"}).batch_size == 32
    # 4096x4096x3 float32 is 192 MiB: one picture per run fits the 256 MiB bound.
    assert make_encoder(f"onnx:{model}", {"size": "4096"}).batch_size == 1


def test_external_data_files_are_part_of_the_identity(tmp_path):
    model = conv_model(tmp_path / "model.onnx", external="model.bin")
    data = tmp_path / "model.bin"
    encoder = make_encoder(f"onnx:{model}")
    assert encoder.identity()["external_data"] == {"model.bin": hashlib.sha256(data.read_bytes()).hexdigest()}
    picture = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    before = encoder.encode([picture])
    EncoderRecord.of(encoder).save(tmp_path / "encoder.json")
    FeaturePipeline.load(tmp_path)  # unchanged: accepted

    data.write_bytes((WEIGHTS[::-1] * 2).tobytes())  # other weights of the same size
    assert np.abs(make_encoder(f"onnx:{model}").encode([picture]) - before).max() > 0.1
    with pytest.raises(EncoderError, match="no longer gives the features recorded: external_data was"):
        FeaturePipeline.load(tmp_path)


def test_onnxruntime_refuses_external_data_outside_the_models_folder(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    model_path = conv_model(folder / "model.onnx", external="model.bin")
    (folder / "model.bin").rename(tmp_path / "outside.bin")
    model = onnx.load(str(model_path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.bin"
    onnx.save(model, str(model_path))
    with pytest.raises(EncoderError, match=r"model\.onnx: not an ONNX model onnxruntime can load \(.*escapes"):
        make_encoder(f"onnx:{model_path}")


def test_the_recorded_model_path_is_resolved(tmp_path, monkeypatch):
    conv_model(tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    record = EncoderRecord.of(make_encoder("onnx:model.onnx"))
    assert record.argument == str(tmp_path.resolve() / "model.onnx")
    assert EncoderRecord.of(make_encoder("onnx:./model.onnx:features")).argument == \
        f"{tmp_path.resolve() / 'model.onnx'}:features"


@pytest.mark.parametrize("blank", [np.zeros((64, 64, 3), np.uint8), np.full((40, 50, 3), 12, np.uint8),
                                   np.random.default_rng(4).integers(0, 30, (64, 64, 3), dtype=np.uint8)])
def test_a_blank_picture_gets_the_same_features_alone_or_beside_others(blank):
    shape = np.zeros((64, 64, 3), np.uint8)
    shape[10:40, 20:50] = (230, 30, 30)
    encoder = ShapesEncoder()
    alone = encoder.encode([blank])
    beside = encoder.encode([blank, shape])
    assert alone.shape == (1, 512) and np.isfinite(alone).all()
    np.testing.assert_array_equal(alone[0], beside[0])


def test_torchvision_weights_are_checked_against_the_digest_in_their_name(tmp_path, monkeypatch):
    # The plugin's module imports without torch; it is read from the source tree (installing it needs torch).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "plugins" / "captionkit-torchvision"))
    from captionkit_torchvision import encoders as plugin
    content = b"a state dict, or so it says"
    digest = hashlib.sha256(content).hexdigest()
    good = tmp_path / f"resnet50-{digest[:8]}.pth"
    good.write_bytes(content)
    assert plugin.weights_digest(good) == digest
    other = tmp_path / "resnet50-11ad3fa6.pth"  # the official name, another file's content
    other.write_bytes(content)
    with pytest.raises(EncoderError, match=rf"resnet50-11ad3fa6\.pth: the file's SHA-256 is {digest[:8]}\.\.\., not "
                                           "the 11ad3fa6 its name says"):
        plugin.weights_digest(other)
    unnamed = tmp_path / "resnet50.pth"
    unnamed.write_bytes(content)
    with pytest.raises(EncoderError, match="carries no SHA-256 prefix"):
        plugin.weights_digest(unnamed)


def test_every_external_data_file_is_found_as_onnx_itself_lists_them(tmp_path):
    """The protobuf walk against the onnx package's own reading: initialisers in separate files, and a tensor
    inside a subgraph (an If node's branch)."""
    from captionkit.encoders.onnx_file import external_data_locations

    branch_tensor = numpy_helper.from_array(np.ones(64, np.float32), "branch_value")
    branch = helper.make_graph([helper.make_node("Identity", ["branch_value"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", TensorProto.FLOAT, [64])], [branch_tensor])
    nodes = [helper.make_node("If", ["flag"], ["chosen"], then_branch=branch, else_branch=branch),
             helper.make_node("Add", ["chosen", "a"], ["sum"]), helper.make_node("Add", ["sum", "b"], ["result"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("result", TensorProto.FLOAT, [64])],
                              [numpy_helper.from_array(np.full(64, 2, np.float32), "a"),
                               numpy_helper.from_array(np.full(64, 3, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)
    loaded = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    tensors = [*loaded.graph.initializer, *loaded.graph.node[0].attribute[0].g.initializer]
    expected = sorted({entry.value for t in tensors for entry in t.external_data if entry.key == "location"})
    assert len(expected) == 3
    assert external_data_locations((tmp_path / "m.onnx").read_bytes()) == expected
    with pytest.raises(ValueError):
        external_data_locations(b"\x0f\xff\xff")
