"""Encoders giving grids of region features: ``shapes`` with ``grid=K``, ``onnx`` with ``grid=yes``, and the
torchvision plugin's ``grid=yes`` (its network run only when torch is installed).

Oracles: for ``shapes``, the pooled encoder run on each cell cropped from the picture (the grid mode's definition);
for ``onnx``, a convolution computed with numpy on a model built here with onnx.helper; for torchvision, the
unmodified network's layer output taken by a forward hook.
"""
import sys

import numpy as np
import pytest
from PIL import Image

from captionkit.encoders import EncoderError, make_encoder
from captionkit.encoders.pipeline import encode_files
from captionkit.encoders.shapes import MAX_GRID
from captionkit.images import resize
from captionkit.synthetic.features import CHANNEL_POOLED_DIM, NUM_CHANNELS, POOLED_GRID, colour_maps
from captionkit.synthetic.generate import generate_split
from captionkit.synthetic.scenes import COLOURS, IMAGE_SIZE
from conftest import REPO_ROOT

CELL = 64  # the pixels a side of one region of the shapes encoder's grid
BACKGROUND = 30


def picture_with_shapes(cells):
    """A (64 cells)-pixel square dark picture with a red square in the top-left cell and a blue disc in the cell of
    the bottom row's second column (region ``cells * (cells - 1) + 1``)."""
    side = CELL * cells
    rng = np.random.default_rng(0)
    picture = np.clip(BACKGROUND + 3 * rng.standard_normal((side, side, 1)), 0, 255).repeat(3, axis=2)
    picture[18:40, 12:34] = (220, 45, 40)
    rows, cols = np.mgrid[:side, :side]
    centre_y, centre_x = CELL * (cells - 1) + 30, CELL + 28
    picture[(rows - centre_y) ** 2 + (cols - centre_x) ** 2 <= 12 ** 2] = (40, 45, 230)
    return picture.astype(np.uint8)


def cell(picture, row, col):
    return picture[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL]


def test_shapes_grid_gives_each_region_the_pooled_descriptor_of_its_cell():
    cells = 3
    picture = picture_with_shapes(cells)
    encoder = make_encoder("shapes", {"grid": str(cells)})
    assert encoder.output_shape == (9, 512)
    grid = encoder.encode([picture])
    assert grid.shape == (1, 9, 512) and grid.dtype == np.float32
    pooled = make_encoder("shapes")
    for row in range(cells):
        for col in range(cells):
            np.testing.assert_array_equal(grid[0, row * cells + col], pooled.encode([cell(picture, row, col)])[0])
    # The shapes' regions differ from the empty ones, which read as an empty scene.
    empty = pooled.encode([np.full((CELL, CELL, 3), BACKGROUND, np.uint8)])[0]
    blank = [r for r in range(9) if r not in (0, 7)]
    np.testing.assert_allclose(grid[0, blank], np.broadcast_to(empty, (7, 512)), atol=1e-6)
    assert np.abs(grid[0, 0] - empty).max() > 0.5 and np.abs(grid[0, 7] - empty).max() > 0.5
    assert np.abs(grid[0, 0] - grid[0, 7]).max() > 0.5  # a red square and a blue disc read differently


def test_shapes_grid_regions_of_synthetic_scenes_hold_the_colours_of_the_shapes_drawn_there():
    """Oracle: the scenes' geometry. Each object's colour is present (its channel's mass profile is non-zero) in the
    region holding its centre, and a region shows only colours of objects whose box (widened by 2 pixels for
    anti-aliasing and resampling) reaches into its cell."""
    cells, cell_side = 4, IMAGE_SIZE / 4
    split = generate_split(np.random.default_rng(7), 40)
    grid = make_encoder("shapes", {"grid": str(cells)}).encode(split.images)
    # Channel c's pooled features start with its column and row mass profiles (2 * POOLED_GRID values).
    profiles = grid[..., :NUM_CHANNELS * CHANNEL_POOLED_DIM].reshape(40, cells * cells, NUM_CHANNELS, -1)
    present = profiles[..., :2 * POOLED_GRID].sum(axis=-1) > 0
    checked = 0
    for image, scene in enumerate(split.scenes):
        for region in range(cells * cells):
            top, left = (region // cells) * cell_side, (region % cells) * cell_side
            reaching = {channel_of(obj.colour) for obj in scene.objects
                        if obj.box[0] - 2 < left + cell_side and obj.box[2] + 2 > left
                        and obj.box[1] - 2 < top + cell_side and obj.box[3] + 2 > top}
            assert set(np.flatnonzero(present[image, region])) <= reaching, (image, region)
        for obj in scene.objects:
            x, y = obj.centre
            region = int(y // cell_side) * cells + int(x // cell_side)
            assert present[image, region, channel_of(obj.colour)], (image, obj)
            checked += 1
    assert checked >= 60  # one to three objects a scene


def test_shapes_grid_encodes_many_pictures_as_it_encodes_each_alone():
    images = generate_split(np.random.default_rng(8), 20).images
    encoder = make_encoder("shapes", {"grid": "4"})
    assert encoder.batch_size < len(images)  # the pictures go through in several batches
    alone = np.concatenate([encoder.encode([image]) for image in images])
    np.testing.assert_array_equal(encoder.encode(images), alone)


def channel_of(colour):
    """The colour channel of the feature extractor that a colour word's pixels belong to."""
    _, owners = colour_maps(np.full((1, 8, 8, 3), COLOURS[colour], np.uint8))
    assert len(owners) == 1
    return int(owners[0])


def test_shapes_grid_resizes_other_sizes_as_a_whole():
    picture = np.random.default_rng(2).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    encoder = make_encoder("shapes", {"grid": "2"})
    expected = make_encoder("shapes", {"grid": "2"}).encode([resize(picture, 128, 128)])
    np.testing.assert_array_equal(encoder.encode([picture]), expected)
    assert encoder.decode_size == (128, 128)


@pytest.mark.parametrize("value", ["0", str(MAX_GRID + 1), "two", "2.5", ""])
def test_shapes_grid_option_out_of_range_is_refused(value):
    with pytest.raises(EncoderError, match=rf"encoder 'shapes': option grid={value!r} must be a whole number"):
        make_encoder("shapes", {"grid": value})


def test_encoding_picture_files_into_grids(tmp_path):
    pictures = [picture_with_shapes(2), np.full((50, 70, 3), 200, np.uint8)]
    paths = []
    for index, picture in enumerate(pictures):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(picture).save(paths[-1])
    encoder = make_encoder("shapes", {"grid": "2"})
    features = encode_files(encoder, paths)
    assert features.shape == (2, 4, 512)
    np.testing.assert_array_equal(features, encoder.encode(pictures))


# ---------------------------------------------------------------------------------------------- onnx
onnx = pytest.importorskip("onnx", reason="the onnx encoder's test models are built with onnx (not installed)")
pytest.importorskip("onnxruntime", reason="the onnx encoder runs onnxruntime (not installed)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

WEIGHTS = np.random.default_rng(3).standard_normal((2, 3, 2, 2)).astype(np.float32)
BIAS = np.array([0.5, -0.25], np.float32)


def conv_grid_oracle(pictures):
    """The 2x2 stride-2 convolution of pictures (N, 8, 8, 3) scaled to [0, 1], as (N, 16, 2): position h*4+w."""
    x = np.stack(pictures).astype(np.float64) / 255
    windows = x.reshape(len(x), 4, 2, 4, 2, 3)  # n, h, i, w, j, channel
    out = np.einsum("nhiwjc,ocij->nhwo", windows, WEIGHTS) + BIAS
    return out.reshape(len(x), 16, 2)


def save_conv_model(path, layout="nchw"):
    """Outputs ``map``, the convolution's (N, 2, 4, 4) feature map (NHWC (N, 4, 4, 2) for an NHWC model), and
    ``vector``, its global average (N, 2)."""
    nodes, source = [], "x"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        source = "x_nchw"
    nodes += [helper.make_node("Conv", [source, "W", "B"], ["conv"], strides=[2, 2]),
              helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["vector"])]
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", ["conv"], ["map"], perm=[0, 2, 3, 1]))
    else:
        nodes.append(helper.make_node("Identity", ["conv"], ["map"]))
    input_shape = ["N", 3, 8, 8] if layout == "nchw" else ["N", 8, 8, 3]
    map_shape = ["N", 2, 4, 4] if layout == "nchw" else ["N", 4, 4, 2]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("map", TensorProto.FLOAT, map_shape),
                               helper.make_tensor_value_info("vector", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_onnx_grid_keeps_the_feature_maps_positions_as_regions(tmp_path, layout):
    model = save_conv_model(tmp_path / "conv.onnx", layout)
    pictures = list(np.random.default_rng(4).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    encoder = make_encoder(f"onnx:{model}:map", {"grid": "yes"})
    assert (encoder.regions, encoder.dim, encoder.output_shape) == (16, 2, (16, 2))
    grid = encoder.encode(pictures)
    assert grid.shape == (3, 16, 2) and grid.dtype == np.float32
    np.testing.assert_allclose(grid, conv_grid_oracle(pictures), rtol=1e-5, atol=1e-5)
    # Without grid=yes the same map is averaged, as before.
    pooled = make_encoder(f"onnx:{model}:map")
    assert pooled.regions is None and pooled.output_shape == (2,)
    np.testing.assert_allclose(pooled.encode(pictures), conv_grid_oracle(pictures).mean(axis=1), rtol=1e-5,
                               atol=1e-5)


def test_onnx_grid_of_a_vector_output_is_refused_naming_the_output(tmp_path):
    model = save_conv_model(tmp_path / "conv.onnx")
    with pytest.raises(EncoderError, match=r"conv\.onnx: grid=yes needs a feature map \(N, C, H, W\), but output "
                                           r"'vector' has shape \['N', 2\]"):
        make_encoder(f"onnx:{model}:vector", {"grid": "yes"})
    with pytest.raises(EncoderError, match=r"option grid must be one of no, yes, got 'maybe'"):
        make_encoder(f"onnx:{model}:map", {"grid": "maybe"})


# ---------------------------------------------------------------------------------------------- torchvision
sys.path.insert(0, str(REPO_ROOT / "plugins" / "captionkit-torchvision"))
from captionkit_torchvision import ResNet50Encoder, VGG16Encoder  # noqa: E402


@pytest.mark.parametrize("encoder_class", [ResNet50Encoder, VGG16Encoder])
def test_torchvision_grid_option_is_checked_before_torch_is_needed(encoder_class):
    with pytest.raises(EncoderError, match=r"option grid must be one of no, yes, got 'maybe'"):
        encoder_class(None, {"grid": "maybe", "weights": "none"})


@pytest.mark.parametrize("arch, layer, shape", [("resnet50", "layer4", (49, 2048)),
                                                ("vgg16", "features.29", (196, 512))])
def test_torchvision_grid_is_the_layers_feature_map(arch, layer, shape):
    torch = pytest.importorskip("torch", reason="the torchvision encoders run torch (not installed)")
    torchvision = pytest.importorskip("torchvision", reason="the torchvision encoders need torchvision "
                                                            "(not installed)")
    encoder = make_encoder(arch, {"grid": "yes", "weights": "none", "seed": "3"})
    assert encoder.output_shape == shape
    pictures = list(np.random.default_rng(5).integers(0, 256, (2, 240, 260, 3), dtype=np.uint8))
    grid = encoder.encode(pictures)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        network = getattr(torchvision.models, arch)(weights=None).eval()
    captured = {}
    network.get_submodule(layer).register_forward_hook(lambda module, inputs, out: captured.update(map=out))
    batch = torch.stack([encoder.transform(Image.fromarray(p)) for p in pictures])
    with torch.inference_mode():
        network(batch)
    expected = captured["map"].flatten(2).transpose(1, 2).numpy()
    # layer4's values reach about 20; the plugin runs channels-last, the reference torch's default layout.
    np.testing.assert_allclose(grid, expected, rtol=1e-4, atol=5e-4)
