"""The torchvision encoder plugin (plugins/captionkit-torchvision), used from the checkout without installing it.

Without torch: importing the plugin does not import torch, where torch.hub keeps weights, the one-line messages, the
missing-library report. With torch and torchvision: ``weights=none`` features against the same torchvision network
built and run here (features read off the unmodified network with a forward hook, pictures preprocessed with the
weights' own transform on PIL images), the offline failure for missing pretrained weights, and the plugin through
captionkit's registry and recorded pipeline. Nothing is downloaded: TORCH_HOME is a fresh folder and torch.hub's
download function raises.
"""
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
from PIL import Image

from captionkit.encoders import EncoderError, EncoderRegistry
from captionkit.encoders.pipeline import EncoderRecord, FeaturePipeline
from captionkit.plugins import PluginLoadError
from conftest import REPO_ROOT

PLUGIN_DIR = REPO_ROOT / "plugins" / "captionkit-torchvision"
sys.path.insert(0, str(PLUGIN_DIR))

import captionkit_torchvision  # noqa: E402
from captionkit_torchvision import (  # noqa: E402
    ResNet50Encoder,
    VGG16Encoder,
    missing_weights_message,
    torch_hub_dir,
    unreadable_weights_message,
    weights_directory,
)

RESNET_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
BUILTINS = {"resnet50": "captionkit_torchvision:ResNet50Encoder", "vgg16": "captionkit_torchvision:VGG16Encoder"}


def need_torch():
    """Skip the calling test unless torch and torchvision are installed; return (torch, torchvision)."""
    torch = pytest.importorskip("torch", reason="the torchvision encoders run torch (not installed)")
    torchvision = pytest.importorskip("torchvision", reason="the torchvision encoders need torchvision (not installed)")
    return torch, torchvision


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty TORCH_HOME and a torch.hub whose download raises URLError: no test reaches the network."""
    torch, _ = need_torch()
    import torch.hub

    calls = []

    def no_download(url, dst, *args, **kwargs):
        calls.append((url, dst))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution (test: offline)")

    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return home, calls


def pictures():
    """Two sizes and aspect ratios, one taller and one wider than square, and a greyscale picture as RGB."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:300, :200]
    smooth = np.stack([np.sin(x / 17.0), np.cos(y / 23.0), np.sin((x + y) / 31.0)], -1)
    tall = np.clip(128 + 90 * smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    wide = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
    grey = np.repeat(rng.integers(0, 256, (180, 240, 1), dtype=np.uint8), 3, axis=2)
    return [tall, wide, grey]


# ---------------------------------------------------------------------------------------------- without torch
@pytest.mark.slow
def test_importing_the_plugin_does_not_import_torch():
    code = (f"import sys; sys.path.insert(0, {str(PLUGIN_DIR)!r}); import captionkit_torchvision; "
            "print('torch' in sys.modules, 'torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_hub_dir_follows_torch_home_then_xdg_cache_home_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert torch_hub_dir() == str(tmp_path / "home" / ".cache" / "torch" / "hub")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert torch_hub_dir() == str(tmp_path / "xdg" / "torch" / "hub")
    monkeypatch.setenv("TORCH_HOME", "~/th")  # TORCH_HOME wins, with ~ expanded
    assert torch_hub_dir() == str(tmp_path / "home" / "th" / "hub")
    assert weights_directory() == tmp_path / "home" / "th" / "hub" / "checkpoints"


@pytest.mark.parametrize("env", [
    {},
    {"XDG_CACHE_HOME": "/srv/cache"},
    {"TORCH_HOME": "/srv/torch"},
    {"TORCH_HOME": "~/t", "XDG_CACHE_HOME": "/srv/cache"},
])
def test_hub_dir_is_where_torch_hub_keeps_it(monkeypatch, env):
    torch, _ = need_torch()
    import torch.hub

    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert torch_hub_dir() == torch.hub.get_dir()


def test_weights_messages_are_one_line_naming_file_url_and_folder():
    reason = urllib.error.URLError("[Errno -3] Temporary failure in name resolution\n  more\n  detail")
    message = missing_weights_message("resnet50", "resnet50-11ad3fa6.pth", RESNET_URL, "/data/torch/hub/checkpoints",
                                      reason)
    assert "\n" not in message
    assert message == ("encoder resnet50 needs the weights file resnet50-11ad3fa6.pth, which is not in "
                       "/data/torch/hub/checkpoints and could not be downloaded (URLError: <urlopen error [Errno -3] "
                       "Temporary failure in name resolution): download "
                       "https://download.pytorch.org/models/resnet50-11ad3fa6.pth and put it in "
                       "/data/torch/hub/checkpoints")
    long = missing_weights_message("vgg16", "vgg16-397923af.pth", "U", "D", "x" * 1000 + "\nsecond line")
    assert "\n" not in long and "x" * 150 in long and len(long) < 400 and "second line" not in long
    assert "(unknown reason)" in missing_weights_message("vgg16", "f", "U", "D", "\n \n")
    unreadable = unreadable_weights_message("resnet50", "resnet50-11ad3fa6.pth", RESNET_URL, "/w",
                                            RuntimeError("PytorchStreamReader failed\nreading zip archive"))
    assert "\n" not in unreadable
    assert "/w/resnet50-11ad3fa6.pth cannot be used (RuntimeError: PytorchStreamReader failed)" in unreadable
    assert RESNET_URL in unreadable


@pytest.mark.parametrize("missing, expected", [
    ({"torch"}, "it needs torch, which is not installed: pip install torch"),
    ({"torchvision"}, "it needs torchvision, which is not installed: pip install torchvision"),
    ({"torch", "torchvision"},
     "it needs torch and torchvision, which are not installed: pip install torch torchvision"),
])
def test_a_missing_library_is_named_with_how_to_install_it(monkeypatch, missing, expected):
    import importlib.util

    present = object()  # a stand-in spec: what find_spec returns does not matter, only whether it is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else present)
    assert ResNet50Encoder.requirements_problem() == expected
    assert VGG16Encoder.requirements_problem() == expected
    # Through the registry: the load error names the missing library.
    with pytest.raises(PluginLoadError, match=f"'vgg16' .* is broken: {expected}"):
        EncoderRegistry(builtins=BUILTINS, autoload_plugins=False).load("vgg16")


def test_an_old_torchvision_is_named(monkeypatch):
    import importlib.metadata
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.12.0+cpu")
    assert ResNet50Encoder.requirements_problem().startswith("it needs torchvision 0.16 or later, found 0.12.0+cpu")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.29.1")
    assert ResNet50Encoder.requirements_problem() is None


def test_the_encoder_classes_say_what_they_give():
    assert (ResNet50Encoder.output_dim, VGG16Encoder.output_dim) == (2048, 4096)
    for encoder in (ResNet50Encoder, VGG16Encoder):
        assert encoder.batch_size == 16 and encoder.argument is None
        assert set(encoder.option_help) == {"weights", "seed", "grid"}
        assert "imagenet" in encoder.option_help["weights"] and "none" in encoder.option_help["weights"]
    assert "resnet50-11ad3fa6.pth" in ResNet50Encoder.summary and "vgg16-397923af.pth" in VGG16Encoder.summary
    assert captionkit_torchvision.__version__ == "0.1.0"


@pytest.mark.parametrize("options, message", [
    ({"weights": "imagenet21k"}, "option weights must be one of imagenet, none, got 'imagenet21k'"),
    ({"seed": "3"}, "option seed applies only with weights=none"),
    ({"weights": "none", "seed": "x"}, "option seed must be a non-negative integer, got 'x'"),
    ({"weights": "none", "seed": "-1"}, "option seed must be a non-negative integer, got '-1'"),
    ({"size": "224"}, r"has no option 'size' \(its options: grid, seed, weights\)"),
])
def test_bad_options_are_refused_before_torch_is_needed(options, message):
    with pytest.raises(EncoderError, match=message):
        ResNet50Encoder(None, options)


# ---------------------------------------------------------------------------------------------- with torch
def reference_features(arch, images, seed, layer, channels_last=True):
    """Features of ``images`` from the torchvision network ``arch`` with random weights from ``seed``, read off the
    unmodified network's ``layer`` with a forward hook; pictures through the weights' transform as PIL images.

    ``channels_last``: run it in the memory layout the plugin uses for speed, so that both run the same convolution
    kernels and agree to float32 rounding of the last bit; the default layout sums in another order (checked apart,
    to a looser tolerance)."""
    torch, torchvision = need_torch()
    weights = {"resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
               "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1}[arch]
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    preprocess = weights.transforms()
    batch = torch.stack([preprocess(Image.fromarray(image)) for image in images])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)
    seen = []
    handle = layer(model).register_forward_hook(lambda module, args, output: seen.append(output.clone()))
    with torch.no_grad():
        model(batch)
    handle.remove()
    return torch.flatten(seen[0], 1).numpy()


def test_resnet50_gives_the_pooled_features_of_torchvisions_network():
    torch, _ = need_torch()
    images = pictures()
    rng_before = torch.random.get_rng_state()
    encoder = ResNet50Encoder(None, {"weights": "none", "seed": "3"})
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the seed does not touch the caller's RNG
    features = encoder.encode(images)
    assert features.shape == (3, 2048) and features.dtype == np.float32 and encoder.dim == 2048
    expected = reference_features("resnet50", images, 3, lambda model: model.avgpool)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    # The network in torch's default layout: the same features up to the order of float32 sums (measured: within
    # 0.85 of rtol=atol=1e-5 on this machine; the margin here allows other CPUs' kernels).
    plain = reference_features("resnet50", images, 3, lambda model: model.avgpool, channels_last=False)
    np.testing.assert_allclose(features, plain, rtol=1e-4, atol=1e-4)
    # The seed decides the weights; the same seed, the same features; more pictures than a batch, the same rows.
    other = ResNet50Encoder(None, {"weights": "none", "seed": "4"}).encode(images[:1])
    assert np.abs(other - features[:1]).max() > 1e-3
    many = ResNet50Encoder(None, {"weights": "none", "seed": "3"}).encode([images[1]] * 17 + [images[0]])
    assert many.shape == (18, 2048)
    np.testing.assert_allclose(many[[0, 16, 17]], features[[1, 1, 0]], rtol=1e-5, atol=1e-5)
    assert encoder.encode([]).shape == (0, 2048)
    with pytest.raises(EncoderError, match=r"\(H, W, 3\) uint8 RGB arrays, got float64 \(4, 4, 3\)"):
        encoder.encode([np.zeros((4, 4, 3))])


def test_resnet50_says_what_it_is():
    torch, torchvision = need_torch()
    encoder = ResNet50Encoder(None, {"weights": "none"})
    version = ".".join(torchvision.__version__.split("+")[0].split(".")[:2])
    torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    assert encoder.identity() == {"weights": "none", "seed": 0, "torchvision": version, "torch": torch_version}
    description = encoder.describe()
    assert "\n" not in description
    for part in ("ResNet-50", "random weights (seed 0)", "shorter side resized to 232", "centre 224x224",
                 "mean 0.485, 0.456, 0.406", "std 0.229, 0.224, 0.225", "2048 values"):
        assert part in description


def test_vgg16_gives_fc7_after_its_relu():
    need_torch()
    images = pictures()[:2]
    encoder = VGG16Encoder(None, {"weights": "none"})
    features = encoder.encode(images)
    assert features.shape == (2, 4096) and encoder.dim == 4096
    assert (features >= 0).all() and (features == 0).any()  # after the ReLU
    expected = reference_features("vgg16", images, 0, lambda model: model.classifier[4])
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    assert "VGG-16" in encoder.describe() and "shorter side resized to 256" in encoder.describe()


@pytest.mark.parametrize("encoder_class, file_name", [(ResNet50Encoder, "resnet50-11ad3fa6.pth"),
                                                      (VGG16Encoder, "vgg16-397923af.pth")])
def test_missing_weights_offline_stop_with_one_line_saying_what_to_put_where(offline, encoder_class, file_name):
    home, calls = offline
    with pytest.raises(EncoderError) as caught:
        encoder_class(None, {})
    message = str(caught.value)
    directory = home / "hub" / "checkpoints"
    assert "\n" not in message
    assert f"needs the weights file {file_name}, which is not in {directory}" in message
    assert f"download https://download.pytorch.org/models/{file_name} and put it in {directory}" in message
    assert "URLError" in message and "Temporary failure in name resolution" in message
    assert calls == [(f"https://download.pytorch.org/models/{file_name}", str(directory / file_name))]
    assert not (directory / file_name).exists()


def test_a_failed_hash_check_is_reported_as_missing_weights(offline, monkeypatch):
    import torch.hub

    def bad_download(url, dst, *args, **kwargs):
        raise RuntimeError('invalid hash value (expected "11ad3fa6", got "0123abcd")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", bad_download)
    with pytest.raises(EncoderError, match=r"resnet50-11ad3fa6\.pth, which is not in .*\(RuntimeError: invalid hash"):
        ResNet50Encoder(None, {"weights": "imagenet"})


def test_a_corrupt_weights_file_is_named_without_a_download(offline):
    home, calls = offline
    directory = home / "hub" / "checkpoints"
    directory.mkdir(parents=True)
    (directory / "resnet50-11ad3fa6.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError) as caught:
        ResNet50Encoder(None, {})
    message = str(caught.value)
    assert "\n" not in message and calls == []
    # Its SHA-256 does not begin with the digits its name carries, which the plugin checks before loading it.
    assert str(directory / "resnet50-11ad3fa6.pth") in message and "it is not the published weights" in message


def test_placed_weights_load_and_are_recorded_by_file_name(offline, monkeypatch):
    """A weights file put in the folder the message names is what the encoder loads (here: seeded random weights
    saved under the real name, since the real file is not downloaded in tests; their digest check is stood in for,
    as random weights cannot carry the published digest)."""
    torch, torchvision = need_torch()
    import captionkit_torchvision.encoders as plugin

    monkeypatch.setattr(plugin, "weights_digest", lambda path: "11ad3fa6" + "0" * 56)
    home, calls = offline
    directory = home / "hub" / "checkpoints"
    directory.mkdir(parents=True)
    torch.manual_seed(5)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), directory / "resnet50-11ad3fa6.pth")
    encoder = ResNet50Encoder(None, {})
    assert calls == []
    assert encoder.identity()["weights"] == "resnet50-11ad3fa6.pth" and "seed" not in encoder.identity()
    assert "weights resnet50-11ad3fa6.pth" in encoder.describe()
    images = pictures()[:1]
    np.testing.assert_allclose(encoder.encode(images), reference_features("resnet50", images, 5, lambda m: m.avgpool),
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- through captionkit
def test_registry_loads_the_plugin_without_installing_it():
    registry = EncoderRegistry(builtins=BUILTINS, autoload_plugins=False)
    if ResNet50Encoder.requirements_problem() is not None:
        pytest.skip("the registry refuses the torchvision encoders without torch and torchvision")
    assert registry.load("resnet50") is ResNet50Encoder and registry.load("vgg16") is VGG16Encoder
    assert ResNet50Encoder.registered_name == "resnet50"
    encoder = registry.load("resnet50")(None, {"weights": "none"})
    assert encoder.dim == 2048 and encoder.options == {"weights": "none"}


def test_the_recorded_pipeline_builds_the_encoder_again(tmp_path, monkeypatch):
    need_torch()
    registry = EncoderRegistry(builtins={}, autoload_plugins=False)
    registry.register("resnet50", "captionkit_torchvision:ResNet50Encoder")
    monkeypatch.setattr("captionkit.encoders.registry._default_registry", registry)
    from captionkit.encoders import make_encoder

    encoder = make_encoder("resnet50", {"weights": "none", "seed": "2"})
    record = EncoderRecord.of(encoder)
    assert (record.encoder, record.output_dim, record.identity["seed"]) == ("resnet50", 2048, 2)
    record.save(tmp_path / "encoder.json")
    assert EncoderRecord.load(tmp_path / "encoder.json") == record
    paths = []
    for k, image in enumerate(pictures()[:2]):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(image).save(paths[-1])
    pipeline = FeaturePipeline.load(tmp_path)
    np.testing.assert_allclose(pipeline.encode_files(paths), encoder.encode(pictures()[:2]), rtol=1e-6, atol=1e-6)
    # A record of another seed: the rebuilt encoder's identity differs, and the message says how.
    EncoderRecord(**{**record.to_dict(), "options": {"weights": "none", "seed": "1"}}).save(tmp_path / "encoder.json")
    with pytest.raises(EncoderError, match="no longer gives the features recorded: seed was 2, it is now 1"):
        FeaturePipeline.load(tmp_path)
