"""The ``resnet50`` and ``vgg16`` encoders: torchvision's ImageNet classifiers cut before their class scores.

- ``resnet50``: ResNet-50 with ``ResNet50_Weights.IMAGENET1K_V2`` (``resnet50-11ad3fa6.pth``); its global average
  pooled output, before the final ``fc`` layer: 2048 values;
- ``vgg16``: VGG-16 with ``VGG16_Weights.IMAGENET1K_V1`` (``vgg16-397923af.pth``); fc7 after its ReLU
  (``classifier[:5]``): 4096 values, the features of the CS231n assignment's COCO bundle.

With ``grid=yes`` either gives a grid of image regions instead, for attention models (the feature maps "Show,
Attend and Tell" attends over): ResNet-50's ``layer4`` output, 7 x 7 regions of 2048 values, and VGG-16's conv5_3
after its ReLU (``features[:-1]``, before the last max pooling), 14 x 14 regions of 512 values, at the 224 x 224
crop; (N, C, H, W) becomes (N, H*W, C), positions row by row.

Pictures go through the weights' own evaluation transform (``weights.transforms()``: shorter side resized to its
``resize_size``, bilinear and antialiased, centre crop of ``crop_size``, scaled to [0, 1], ImageNet mean/std), fed
as PIL images, the way torchvision's reference evaluation (and the weights' published accuracy) feeds them.
Picture files are made small as soon as they are read (:meth:`_TorchvisionEncoder.reduce`): a JPEG is decoded at
the smallest of its built-in scales that still covers ``resize_size`` (``decode_size``), and every picture becomes
the ``resize_size`` square around the centre crop, resampled straight from the decoded picture with the transform's
own filter and scale, so a batch holds pictures of 232 x 232 (ResNet-50) or 256 x 256 (VGG-16) only, whatever the
files' sizes and shapes, and the transform gives the same tensor from the square as from the whole picture.

torch and torchvision are imported only when an encoder is built, so that listing encoders stays quick and this
module imports without them. The weights live where torchvision's loader keeps them, torch.hub's cache
(:func:`weights_directory`); a missing file is downloaded once, and when that fails (offline) the encoder stops
with one line naming the file, its URL and the folder to put it in (:func:`missing_weights_message`). torch.hub
checks a file's hash only as it downloads it, so a file already in the cache is checked here
(:func:`weights_digest`: its SHA-256 must begin with the hex digits in its name, torch.hub's naming) and the
digest is part of the encoder's identity.
``weights=none`` builds the network with seeded random weights instead: for tests and offline smoke runs.
"""
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import urllib.parse
from pathlib import Path

import numpy as np

from captionkit.encoders.base import Encoder, EncoderError

__all__ = [
    "ResNet50Encoder",
    "VGG16Encoder",
    "missing_weights_message",
    "torch_hub_dir",
    "unreadable_weights_message",
    "weights_digest",
    "weights_directory",
]

REQUIRED = ("torch", "torchvision")
MIN_TORCHVISION = (0, 16)  # load_state_dict_from_url(weights_only=...) in the matching torch 2.1; the weights API
REASON_LIMIT = 200  # characters of a failure's reason kept in a one-line message
WEIGHT_CHOICES = ("imagenet", "none")
GRID_CHOICES = ("no", "yes")
# How many times longer than wide a picture may be and still be resized whole before the centre square is cut out
# (then at most 16 x 256 x 256 RGBA pixels, 4 MB, for the one picture being reduced); longer strips are resampled to
# the square directly.
MAX_ELONGATION = 16
# torch.hub's file names carry a prefix of the file's SHA-256: resnet50-11ad3fa6.pth
_NAMED_DIGEST = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")


# ---------------------------------------------------------------------------------------------- where weights live
def torch_hub_dir():
    """What ``torch.hub.get_dir()`` returns, computed from the environment without importing torch.

    ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``, with ``~`` expanded, as
    torch does it (a variable set to an empty string counts as set, as with torch's ``os.getenv``). A directory set
    in-process with ``torch.hub.set_dir`` is not seen: captionkit never sets one.
    """
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    torch_home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return os.path.join(os.path.expanduser(torch_home), "hub")


def weights_directory():
    """The folder torchvision's loader keeps downloaded weights in: :func:`torch_hub_dir`/checkpoints."""
    return Path(torch_hub_dir()) / "checkpoints"


# ---------------------------------------------------------------------------------------------- messages
def _one_line(reason, limit=REASON_LIMIT):
    """``reason`` (text or an exception) as one line of at most ``limit`` characters."""
    if isinstance(reason, BaseException):
        text = str(reason).strip()
        reason = f"{type(reason).__name__}: {text}" if text else type(reason).__name__
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    text = " ".join(lines[0].split()) if lines else "unknown reason"
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def missing_weights_message(arch, file_name, url, directory, reason):
    """One line: the weights file ``file_name`` of ``arch`` is not in ``directory`` and could not be downloaded
    from ``url`` (``reason``, shortened to one line); where to get it and where to put it."""
    return (f"encoder {arch} needs the weights file {file_name}, which is not in {directory} and could not be "
            f"downloaded ({_one_line(reason)}): download {url} and put it in {directory}")


def unreadable_weights_message(arch, file_name, url, directory, reason):
    """One line: the weights file ``file_name`` in ``directory`` is there but cannot be used (``reason``)."""
    path = Path(directory) / file_name
    return (f"encoder {arch}: the weights file {path} cannot be used ({_one_line(reason)}); delete it to have it "
            f"downloaded again, or replace it with {url}")


def weights_digest(path):
    """The SHA-256 (hex) of the weights file ``path``, checked against the digest prefix its name carries
    (``NAME-<8 or more hex digits>.EXT``); EncoderError naming the file when the name carries none or the file's
    digest does not begin with it."""
    path = Path(path)
    match = _NAMED_DIGEST.search(path.name)
    if match is None:
        raise EncoderError(f"{path}: the weights file's name carries no SHA-256 prefix (NAME-<hex digits>.pth)")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    found = digest.hexdigest()
    if not found.startswith(match.group(1)):
        raise EncoderError(f"{path}: the file's SHA-256 is {found[:len(match.group(1))]}..., not the "
                           f"{match.group(1)} its name says: it is not the published weights; delete it to have "
                           "it downloaded again")
    return found


def _requirements_problem():
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return f"it needs {' and '.join(missing)}, which {verb} not installed: pip install {' '.join(missing)}"
    try:
        found = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:  # importable without metadata (a source checkout): trust it
        return None
    match = re.match(r"(\d+)\.(\d+)", found)
    if match and tuple(map(int, match.groups())) < MIN_TORCHVISION:
        wanted = ".".join(map(str, MIN_TORCHVISION))
        return (f"it needs torchvision {wanted} or later, found {found}: "
                f"pip install --upgrade 'torchvision>={wanted}' torch")
    return None


# ---------------------------------------------------------------------------------------------- the encoders
class _TorchvisionEncoder(Encoder):
    """A torchvision ImageNet classifier cut to features; subclasses name the network and say where to cut."""

    arch = None  # torchvision.models builder, e.g. "resnet50"
    title = None  # the network's name in describe()
    weights_enum = None  # e.g. "ResNet50_Weights"
    weights_member = None  # e.g. "IMAGENET1K_V2"
    features_text = None  # what the features are, in describe()
    grid_text = None  # what the grid features are, in describe()
    grid_shape = None  # (regions, values) of the grid at the weights' 224 x 224 crop
    pretrained_kwargs = {}  # builder arguments when the weights are loaded over the built network
    argument = None
    batch_size = 16
    option_help = {
        "weights": "imagenet (torchvision's ImageNet weights, downloaded once into torch's cache; default) or none "
                   "(random weights from option seed: for tests and offline smoke runs, not for real captions)",
        "seed": "with weights=none: the torch seed of the random weights (an integer, default 0)",
        "grid": "yes: a grid of region features for attention (resnet50: layer4, 49 regions x 2048; vgg16: conv5_3, "
                "196 regions x 512); no (default): one vector a picture",
    }

    @classmethod
    def requirements_problem(cls):
        return _requirements_problem()

    def __init__(self, argument=None, options=None):
        super().__init__(argument, options)
        self.weights_choice, self.seed = self._parse_options(self.options)
        self.grid = _grid_choice(self.options)
        if self.grid:
            self.regions, self.output_dim = self.grid_shape
        import torch
        import torchvision
        from torchvision import models, transforms

        self.torchvision_version = ".".join(torchvision.__version__.split("+")[0].split(".")[:2])
        self.torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
        weights = getattr(models, self.weights_enum)[self.weights_member]
        # The weights' own evaluation transform, whatever the weights loaded: the preprocessing is part of the
        # encoder, and weights=none should exercise exactly the same path.
        self.transform = weights.transforms()
        self.resample = transforms.functional.pil_modes_mapping[self.transform.interpolation]
        self.url = weights.url
        self.file_name = os.path.basename(urllib.parse.urlparse(weights.url).path)
        builder = getattr(models, self.arch)
        if self.weights_choice == "none":
            # A forked RNG state: the seed decides the weights without changing the caller's torch RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = builder(weights=None)
        else:
            # Built empty and filled here rather than builder(weights=...), so that the folder it loads from is the
            # one the error message names (and the same one torchvision's loader would use).
            model = builder(weights=None, **self.pretrained_kwargs)
            self._load_weights(torch, model)
        model = self._cut_grid(torch, model) if self.grid else self._cut(torch, model)
        # Channels-last memory (NHWC) lets torch's CPU convolutions (oneDNN) run without reordering every layer:
        # measured 1.5x faster for both networks on a batch of 16, the same features to float rounding (1e-6).
        self.model = model.eval().to(memory_format=torch.channels_last)
        # torch.set_num_threads is left alone: torch's default already follows OMP_NUM_THREADS or the machine's
        # cores, which is what a convolution network wants, and it is process-wide, so setting it here would
        # change it for any other torch code in the process too.

    @staticmethod
    def _parse_options(options):
        weights = str(options.get("weights", "imagenet")).strip().lower()
        if weights not in WEIGHT_CHOICES:
            raise EncoderError(f"option weights must be one of {', '.join(WEIGHT_CHOICES)}, got {options['weights']!r}")
        if "seed" not in options:
            return weights, (0 if weights == "none" else None)
        if weights != "none":
            raise EncoderError("option seed applies only with weights=none (random weights)")
        try:
            seed = int(str(options["seed"]).strip())
        except ValueError:
            seed = -1
        if not 0 <= seed < 2 ** 63:
            raise EncoderError(f"option seed must be a non-negative integer, got {options['seed']!r}")
        return weights, seed

    def _load_weights(self, torch, model):
        directory = weights_directory()
        cached = directory / self.file_name
        # A file already there is not checked by torch.hub: check it before it is loaded.
        self.weights_sha256 = weights_digest(cached) if cached.is_file() else None
        try:
            state = torch.hub.load_state_dict_from_url(self.url, model_dir=str(directory), map_location="cpu",
                                                       progress=True, check_hash=True, weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # the download and torch.load raise many kinds (URLError, OSError, RuntimeError...)
            if (directory / self.file_name).is_file():  # there, but corrupt or not this network's weights
                message = unreadable_weights_message(self.arch, self.file_name, self.url, directory, exc)
            else:  # offline, unreachable, a failed hash check (torch deletes the download then), no write access
                message = missing_weights_message(self.arch, self.file_name, self.url, directory, exc)
            raise EncoderError(message) from None
        if self.weights_sha256 is None:  # downloaded just now, its hash checked by torch.hub
            self.weights_sha256 = weights_digest(cached)

    def _cut(self, torch, model):
        """``model`` with its output made the feature vectors."""
        raise NotImplementedError

    def _cut_grid(self, torch, model):
        """The part of ``model`` whose output is the feature map (N, C, H, W) of the grid."""
        raise NotImplementedError

    @property
    def decode_size(self):
        side = self.transform.resize_size[0]
        return (side, side)

    def reduce(self, image):
        """``image`` as the ``resize_size`` square that holds the transform's centre crop after its resize, so that the
        transform gives the same tensor from it as from ``image`` (its resize is then a no-op, its crop the same
        pixels).

        Up to :data:`MAX_ELONGATION` times as long as wide, the picture is resized whole, by the transform's own
        resize, and the square cut out: the very pixels. A longer strip is never resized whole (a 10 x 10000 strip
        would become 232 x 232,000): the square is resampled straight from it with the same filter and scale, whose
        coordinates PIL takes in single precision, so a few of its pixels may be one level (of 255) off the whole
        resize's."""
        from PIL import Image
        from torchvision.transforms import functional

        image = _rgb(image)
        side, crop = self.transform.resize_size[0], self.transform.crop_size[0]
        rows, cols = image.shape[:2]
        if (rows, cols) == (side, side):
            return image
        # The resize's output size, by torchvision's rule: the shorter side becomes `side`, the longer one is scaled
        # and truncated.
        if cols <= rows:
            resized_rows, resized_cols = int(side * rows / cols), side
        else:
            resized_rows, resized_cols = side, int(side * cols / rows)
        top = _square_start(resized_rows, side, crop)
        left = _square_start(resized_cols, side, crop)
        if max(resized_rows, resized_cols) <= MAX_ELONGATION * side:
            resized = np.asarray(functional.resize(Image.fromarray(image), [side], self.transform.interpolation,
                                                   antialias=self.transform.antialias))
            return resized[top:top + side, left:left + side].copy()  # a copy: the whole is not kept alive
        # The square's columns, then its rows, in the picture's coordinates (PIL maps a box onto the output at the
        # whole resize's scale); one pass at a time, horizontal first, as PIL runs the whole resize, on the band of
        # rows the vertical pass reads (its filter's reach, 3 source pixels at most, Lanczos', scaled when shrinking).
        row_scale, col_scale = rows / resized_rows, cols / resized_cols
        reach = 3 * max(row_scale, 1.0) + 1
        first = max(0, int(top * row_scale - reach))
        last = min(rows, int((top + side) * row_scale + reach) + 1)
        band = Image.fromarray(image[first:last])
        band = band.resize((side, last - first), self.resample,
                           box=(left * col_scale, 0, (left + side) * col_scale, last - first))
        return np.asarray(band.resize((side, side), self.resample,
                                      box=(0, top * row_scale - first, side, (top + side) * row_scale - first)))

    def encode(self, images):
        import torch
        from PIL import Image

        images = list(images)
        if not images:
            return np.zeros((0, *self.output_shape), dtype=np.float32)
        features = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                # PIL images, not tensors: torchvision's antialiased tensor resize rounds differently from PIL's
                # (measured: a 1/255 step on 15-20% of the pixels of 300x200 and 180x240 pictures), and the
                # weights' reference evaluation and accuracy are with PIL images.
                # Each picture reduced first: the transform's resize is then a no-op and its crop takes the same
                # pixels, and a picture of extreme shape is never resized whole.
                batch = torch.stack([self.transform(Image.fromarray(self.reduce(image)))
                                     for image in images[start:start + self.batch_size]])
                out = self.model(batch.contiguous(memory_format=torch.channels_last))
                if self.grid:  # (B, C, H, W) -> (B, H*W, C): one row per position
                    out = out.flatten(2).transpose(1, 2)
                features.append(np.ascontiguousarray(out.numpy()))
        return np.concatenate(features).astype(np.float32, copy=False)

    def identity(self):
        if self.weights_choice == "none":
            # Random weights from a seed may also change with torch's random generators: record its version too.
            return {"weights": "none", "seed": self.seed, "torchvision": self.torchvision_version,
                    "torch": self.torch_version}
        return {"weights": self.file_name, "sha256": self.weights_sha256, "torchvision": self.torchvision_version}

    def describe(self):
        t = self.transform
        weights = (f"random weights (seed {self.seed})" if self.weights_choice == "none"
                   else f"weights {self.file_name}")
        resize = (f"shorter side resized to {t.resize_size[0]}" if len(t.resize_size) == 1
                  else f"resized to {t.resize_size[0]}x{t.resize_size[1]}")
        crop = t.crop_size * 2 if len(t.crop_size) == 1 else t.crop_size
        numbers = lambda values: ", ".join(f"{v:g}" for v in values)  # noqa: E731
        return (f"{self.title} (torchvision {self.torchvision_version}), {weights}: {resize}, centre {crop[0]}x"
                f"{crop[1]}, scaled to [0, 1], mean {numbers(t.mean)}, std {numbers(t.std)}; "
                + (f"{self.grid_text}, {self.regions} regions x {self.dim} values" if self.grid
                   else f"{self.features_text}, {self.dim} values"))


def _grid_choice(options):
    choice = str(options.get("grid", "no")).strip().lower()
    if choice not in GRID_CHOICES:
        raise EncoderError(f"option grid must be one of {', '.join(GRID_CHOICES)}, got {options['grid']!r}")
    return choice == "yes"


def _rgb(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise EncoderError(f"pictures must be non-empty (H, W, 3) uint8 RGB arrays, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _square_start(length, side, crop):
    """Where, along an axis of the resized picture ``length`` long, the ``side``-long stretch starts whose centre
    crop of ``crop`` is the whole picture's: torchvision's centre crop starts at ``round((length - crop) / 2)``.
    (Both weights crop less than they resize to, 224 of 232 and of 256, so the stretch fits in the picture.)"""
    centred = lambda extent: int(round((extent - crop) / 2.0))  # noqa: E731
    return centred(length) - centred(side)


class ResNet50Encoder(_TorchvisionEncoder):
    output_dim = 2048
    arch = "resnet50"
    title = "ResNet-50"
    weights_enum = "ResNet50_Weights"
    weights_member = "IMAGENET1K_V2"
    features_text = "global average pooled features before fc"
    grid_text = "layer4's feature map"
    grid_shape = (49, 2048)
    summary = ("ResNet-50's pooled features, torchvision's IMAGENET1K_V2 weights (resnet50-11ad3fa6.pth; "
               "needs torch, torchvision)")

    def _cut(self, torch, model):
        model.fc = torch.nn.Identity()
        return model

    def _cut_grid(self, torch, model):
        # Everything up to layer4: the children after it are the global average pooling and fc.
        return torch.nn.Sequential(*list(model.children())[:-2])


class VGG16Encoder(_TorchvisionEncoder):
    output_dim = 4096
    arch = "vgg16"
    title = "VGG-16"
    weights_enum = "VGG16_Weights"
    weights_member = "IMAGENET1K_V1"
    features_text = "fc7 after its ReLU"
    grid_text = "conv5_3's feature map after its ReLU"
    grid_shape = (196, 512)
    pretrained_kwargs = {"init_weights": False}  # as torchvision's builder does: the loaded weights replace them
    summary = ("VGG-16's fc7 (the CS231n COCO bundle's features), torchvision's IMAGENET1K_V1 weights "
               "(vgg16-397923af.pth; needs torch, torchvision)")

    def _cut(self, torch, model):
        model.classifier = model.classifier[:5]  # fc6, ReLU, Dropout, fc7, ReLU
        return model

    def _cut_grid(self, torch, model):
        return model.features[:-1]  # the convolutions up to conv5_3's ReLU, without the last max pooling
