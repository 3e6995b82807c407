"""The ``onnx`` encoder: any image model saved as ONNX, run with onnxruntime, as ``onnx:PATH[:OUTPUT]``.

What the model needs is read from the file where it can be, and given as options where it cannot:

- the image input: the one float (or uint8) input of rank 4 with 3 channels, laid out NCHW or NHWC (``input=``
  picks one of several); its height and width from the input's shape, or ``size=224`` / ``size=224x320`` when the
  model takes any size (an option contradicting the model's fixed size is an error);
- pixel values: 0..255 scaled to the range of the file's ``Image.NominalPixelRange`` metadata (the ONNX image
  metadata convention: ``NominalRange_0_255``, ``Normalized_0_1``, ``Normalized_1_1``), else 0..1, or
  ``range=LOW,HIGH``; then ``(x - mean) / std`` per channel with the file's ``mean`` and ``std`` metadata (three
  comma-separated numbers each) or the options of those names (default: none, i.e. 0 and 1); channel order RGB
  unless ``Image.BitmapPixelFormat`` is ``Bgr8`` or ``channels=bgr``. A uint8 input takes the pixels as they are;
- pictures are scaled to cover the input size with their aspect kept and cut at the centre (``resize=crop``, the
  usual ImageNet evaluation transform) or resized as a whole (``resize=stretch``);
- the features: the output named ``OUTPUT`` (default: the first), a 2-D (N, D) output as it is, a 4-D feature map
  averaged over its spatial positions (global average pooling), or with ``grid=yes`` kept as a grid of regions for
  attention models: (N, C, H, W) (or (N, H, W, C) for an NHWC model) becomes (N, H*W, C), positions row by row.

The model is run once on a blank picture when the encoder is built, so a size it cannot take fails at once, with
the file named, before any picture is encoded. Sizes are bounded before anything is allocated for them: an input
side of at most :data:`MAX_SIDE` pixels, one run's input tensor of at most :data:`MAX_BATCH_BYTES` (a model taking
any batch gets fewer pictures per run when they are large; a fixed batch over it is refused), and an output the
model declares at most :data:`MAX_FEATURE_WIDTH` values wide (:data:`MAX_OUTPUT_VALUES` values per picture for a
feature map).

The encoder's identity is the SHA-256 of the .onnx file and of every external-data file its tensors name
(weights kept beside the model, as models over 2 GB must be), so rewriting either is noticed. onnxruntime refuses
external data outside the model's folder (from 1.24.1, the floor of the ``onnx`` extra).
"""
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from captionkit.encoders.base import Encoder, EncoderError
from captionkit.images import crop_to, resize

__all__ = ["MAX_BATCH_BYTES", "MAX_FEATURE_WIDTH", "MAX_OUTPUT_VALUES", "MAX_SIDE", "OnnxEncoder",
           "external_data_locations"]

_PIXEL_RANGES = {"NominalRange_0_255": (0.0, 255.0), "Normalized_0_1": (0.0, 1.0), "Normalized_1_1": (-1.0, 1.0)}
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
_DYNAMIC_BATCH = 32
MAX_SIDE = 4096  # pixels a side of the model's input: ImageNet models take 224 to 600
MAX_BATCH_BYTES = 256 << 20  # one run's input tensor
MAX_FEATURE_WIDTH = 65536  # values per picture a model may output: ResNet-50 gives 2048, VGG-16's fc7 4096
MAX_OUTPUT_VALUES = 1 << 24  # values per picture of a 4-D feature map before it is averaged (64 MB as float32)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _numbers(text, count, what, where):
    """``"0.5,0.4,0.3"`` -> tuple of ``count`` floats (one number is repeated); EncoderError names ``where``."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise EncoderError(f"{where}: {what} must be {count} comma-separated numbers, got {text!r}") from None
    if len(values) == 1:
        values *= count
    if len(values) != count or not all(np.isfinite(values)):
        raise EncoderError(f"{where}: {what} must be {count} comma-separated finite numbers, got {text!r}")
    return values


def _size(text):
    height, sep, width = str(text).lower().partition("x")
    try:
        size = (int(height), int(width if sep else height))
    except ValueError:
        size = (0, 0)
    if min(size) < 1:
        raise EncoderError(f"option size must be HEIGHT or HEIGHTxWIDTH in pixels, got {text!r}")
    return size


# ------------------------------------------------------------------ external data, read from the protobuf wire format
# Field numbers of onnx.proto that lead to tensors: each message kind maps a field to the kind of message it holds.
_MESSAGE_FIELDS = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse_tensor"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse_tensor", 23: "sparse_tensor"},
    "sparse_tensor": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_EXTERNAL_LOCATION_KEY = b"location"


def _varint(data, position):
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _fields(data):
    """(field number, bytes) of each length-delimited field of the protobuf message ``data``; other kinds skipped."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        kind = key & 7
        if kind == 0:
            _, position = _varint(data, position)
        elif kind == 1:
            position += 8
        elif kind == 5:
            position += 4
        elif kind == 2:
            length, position = _varint(data, position)
            yield key >> 3, data[position:position + length]
            position += length
        else:
            raise ValueError(f"wire type {kind}")


def external_data_locations(model_bytes):
    """The external-data file names (``location``) the tensors of the ONNX model ``model_bytes`` name, sorted;
    ValueError when the bytes are not a protobuf message."""
    locations, pending = set(), [("model", memoryview(model_bytes))]
    while pending:
        kind, data = pending.pop()
        if kind == "entry":  # StringStringEntryProto: key 1, value 2
            entry = dict(_fields(data))
            if bytes(entry.get(1, b"")) == _EXTERNAL_LOCATION_KEY:
                locations.add(bytes(entry.get(2, b"")).decode("utf-8", "replace"))
            continue
        children = _MESSAGE_FIELDS[kind]
        pending.extend((children[number], value) for number, value in _fields(data) if number in children)
    return sorted(locations)


def _choice(options, key, choices, default):
    value = options.get(key, default).lower()
    if value not in choices:
        raise EncoderError(f"option {key} must be one of {', '.join(choices)}, got {options[key]!r}")
    return value


class OnnxEncoder(Encoder):
    argument = "PATH[:OUTPUT]"
    option_help = {
        "input": "the image input's name, when the model has several inputs",
        "size": "input size HEIGHT or HEIGHTxWIDTH, when the model takes any size",
        "resize": "crop (cover the size, cut at the centre; default) or stretch (resize as a whole)",
        "range": "LOW,HIGH the pixels are scaled to before mean/std (default: from the file, else 0,1)",
        "mean": "per-channel mean subtracted (three numbers; default: from the file, else 0)",
        "std": "per-channel divisor (three numbers; default: from the file, else 1)",
        "channels": "rgb or bgr (default: from the file, else rgb)",
        "layout": "nchw or nhwc, when the input's shape does not tell",
        "grid": "yes: keep a feature map's H x W positions as H*W regions (N, H*W, C), for attention; no (default): "
                "average them",
    }
    summary = "an image model in an ONNX file, run with onnxruntime (output size: the model's)"

    @classmethod
    def requirements_problem(cls):
        if importlib.util.find_spec("onnxruntime") is None:
            return "it needs onnxruntime, which is not installed: pip install onnxruntime"
        return None

    def __init__(self, argument=None, options=None):
        super().__init__(argument, options)
        self.path, self.output = self._split_argument(argument)
        import onnxruntime

        settings = onnxruntime.SessionOptions()
        settings.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        settings.log_severity_level = 3  # errors only: warnings about unused initialisers are not the user's concern
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), settings, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...) for bad files
            raise EncoderError(f"{self.path}: not an ONNX model onnxruntime can load ({_first_line(exc)})") from None
        # Recorded resolved, so that a run captions from any working directory.
        self.argument_value = str(self.path) if self.output is None else f"{self.path}:{self.output}"
        self.sha256 = _sha256(self.path)
        self.external_data = self._external_data_digests()
        metadata = self.session.get_modelmeta().custom_metadata_map
        self._configure_input(metadata)
        self.grid = _choice(self.options, "grid", ("no", "yes"), "no") == "yes"
        self._configure_output()
        probe = self._run(np.zeros((1, *self.size, 3), dtype=np.uint8))
        self._dim = probe.shape[-1]
        if self.grid:
            self.regions = probe.shape[1]
        if self._dim > MAX_FEATURE_WIDTH:
            raise EncoderError(f"{self.path}: output {self.output!r} gives {self._dim} values a picture, more than "
                               f"the {MAX_FEATURE_WIDTH} captionkit takes")

    def _external_data_digests(self):
        """{location: SHA-256} of the external-data files the model names (onnxruntime has checked that each is
        inside the model's folder as it loaded them)."""
        try:
            locations = external_data_locations(self.path.read_bytes())
        except (ValueError, KeyError) as exc:
            raise EncoderError(f"{self.path}: cannot read the model's external-data names ({exc})") from None
        digests = {}
        for location in locations:
            data_file = self.path.parent / location
            if not data_file.is_file():
                raise EncoderError(f"{self.path}: its external data {location!r} is not a file beside it")
            digests[location] = _sha256(data_file)
        return digests

    # ------------------------------------------------------------------ configuration
    def _split_argument(self, argument):
        path, output = Path(argument), None
        if not path.exists() and ":" in argument:
            head, _, tail = argument.rpartition(":")
            path, output = Path(head), tail
        if not path.exists():
            raise EncoderError(f"{path}: file not found (the onnx encoder's model)")
        if not path.is_file():
            raise EncoderError(f"{path}: not a file (the onnx encoder needs an .onnx model file)")
        return path.resolve(), output

    def _configure_input(self, metadata):
        where = str(self.path)
        inputs = self.session.get_inputs()
        if "input" in self.options:
            chosen = [i for i in inputs if i.name == self.options["input"]]
            if not chosen:
                raise EncoderError(f"{where}: no input named {self.options['input']!r} "
                                   f"(inputs: {_describe_args(inputs)})")
        else:
            chosen = [i for i in inputs if _is_image_input(i)]
            if len(chosen) != 1:
                problem = "no" if not chosen else "more than one"
                raise EncoderError(f"{where}: {problem} image input (a float or uint8 tensor of rank 4 with 3 "
                                   f"channels) among its inputs: {_describe_args(inputs)}"
                                   + ("; name one with --encoder-option input=NAME" if chosen else ""))
        image_input = chosen[0]
        if len(inputs) > 1:
            others = [i.name for i in inputs if i is not image_input]
            raise EncoderError(f"{where}: the model needs inputs besides the image {image_input.name!r}: "
                               f"{', '.join(others)}; captionkit feeds only an image")
        if image_input.type not in _FLOAT_TYPES and image_input.type != "tensor(uint8)":
            raise EncoderError(f"{where}: input {image_input.name!r} is {image_input.type}, expected float or uint8")
        shape = list(image_input.shape)
        if len(shape) != 4:
            raise EncoderError(f"{where}: input {image_input.name!r} has shape {shape}, expected 4 dimensions "
                               "(batch, channels, height, width or batch, height, width, channels)")
        self.input_name, self.input_type = image_input.name, image_input.type
        item_bytes = np.dtype(_FLOAT_TYPES.get(self.input_type, np.uint8)).itemsize
        self.layout = self._layout(shape, where)
        spatial = shape[2:4] if self.layout == "nchw" else shape[1:3]
        fixed = tuple(spatial) if all(isinstance(d, int) and d > 0 for d in spatial) else None
        if "size" in self.options:
            asked = _size(self.options["size"])
            if fixed is not None and asked != fixed:
                raise EncoderError(f"{where}: input {image_input.name!r} takes {fixed[0]}x{fixed[1]} pictures, but "
                                   f"size={self.options['size']} was asked for")
            self.size = asked
        elif fixed is not None:
            self.size = fixed
        else:
            raise EncoderError(f"{where}: input {image_input.name!r} takes pictures of any size ({shape}); give "
                               "one with --encoder-option size=HEIGHT[xWIDTH]")
        if max(self.size) > MAX_SIDE:
            raise EncoderError(f"{where}: input {image_input.name!r} would take pictures of {self.size[0]}x"
                               f"{self.size[1]}, more than the {MAX_SIDE} pixels a side captionkit allows")
        picture_bytes = self.size[0] * self.size[1] * 3 * item_bytes
        batch = shape[0]
        self.fixed_batch = isinstance(batch, int) and batch > 0
        if self.fixed_batch and batch * picture_bytes > MAX_BATCH_BYTES:
            raise EncoderError(f"{where}: input {image_input.name!r} takes batches of {batch} pictures of "
                               f"{self.size[0]}x{self.size[1]}: {batch * picture_bytes / 2**20:,.0f} MiB a run, more "
                               f"than the {MAX_BATCH_BYTES >> 20} MiB captionkit allows")
        self.batch_size = batch if self.fixed_batch else max(1, min(_DYNAMIC_BATCH, MAX_BATCH_BYTES // picture_bytes))
        self.resize_mode = _choice(self.options, "resize", ("crop", "stretch"), "crop")
        nominal = metadata.get("Image.NominalPixelRange")
        default_range = ",".join(map(str, _PIXEL_RANGES.get(nominal, (0.0, 1.0))))
        self.pixel_range = _numbers(self.options.get("range", default_range), 2, "range", where)
        self.mean = _numbers(self.options.get("mean", metadata.get("mean", "0")), 3, "mean", where)
        self.std = _numbers(self.options.get("std", metadata.get("std", "1")), 3, "std", where)
        if min(abs(s) for s in self.std) == 0:
            raise EncoderError(f"{where}: std must not be 0, got {self.std}")
        default_channels = "bgr" if metadata.get("Image.BitmapPixelFormat", "").lower() == "bgr8" else "rgb"
        self.channels = _choice(self.options, "channels", ("rgb", "bgr"), default_channels)
        if self.input_type == "tensor(uint8)" and ({"range", "mean", "std"} & set(self.options)):
            raise EncoderError(f"{where}: input {image_input.name!r} takes uint8 pixels as they are; the options "
                               "range, mean and std do not apply")

    def _layout(self, shape, where):
        if "layout" in self.options:
            return _choice(self.options, "layout", ("nchw", "nhwc"), "nchw")
        if shape[1] == 3:
            return "nchw"
        if shape[3] == 3:
            return "nhwc"
        raise EncoderError(f"{where}: cannot tell the channel axis of input shape {shape}; give "
                           "--encoder-option layout=nchw or layout=nhwc")

    def _configure_output(self):
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        if self.output is None:
            self.output = names[0]
        elif self.output not in names:
            raise EncoderError(f"{self.path}: no output named {self.output!r} (outputs: {_describe_args(outputs)})")
        # What the model declares is checked before the probe run allocates it.
        shape = list(outputs[names.index(self.output)].shape)
        known = [d for d in shape[1:] if isinstance(d, int) and d > 0]
        feature_axis = {2: 1, 4: 1 if self.layout == "nchw" else 3}.get(len(shape))
        width = None if feature_axis is None else shape[feature_axis]
        if isinstance(width, int) and width > MAX_FEATURE_WIDTH:
            raise EncoderError(f"{self.path}: output {self.output!r} ({shape}) is {width} values wide, more than the "
                               f"{MAX_FEATURE_WIDTH} captionkit takes")
        if int(np.prod(known, dtype=np.float64)) > MAX_OUTPUT_VALUES:
            raise EncoderError(f"{self.path}: output {self.output!r} ({shape}) has more than the "
                               f"{MAX_OUTPUT_VALUES:,} values a picture captionkit takes")
        if self.grid and len(shape) != 4:
            raise EncoderError(f"{self.path}: grid=yes needs a feature map (N, C, H, W), but output {self.output!r} "
                               f"has shape {shape}; name another output with onnx:PATH:OUTPUT")

    # ------------------------------------------------------------------ running
    @property
    def decode_size(self):
        return self.size

    def reduce(self, image):
        height, width = self.size
        fit = crop_to if self.resize_mode == "crop" else resize
        return fit(image, height, width)

    def _prepare(self, images):
        pixels = np.stack([self.reduce(image) for image in images])
        if self.channels == "bgr":
            pixels = pixels[..., ::-1]
        if self.input_type == "tensor(uint8)":
            batch = pixels
        else:
            low, high = self.pixel_range
            batch = pixels.astype(np.float32) * ((high - low) / 255.0) + low
            batch = (batch - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            batch = batch.astype(_FLOAT_TYPES[self.input_type])
        if self.layout == "nchw":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch)

    def _run(self, pixels):
        """Features (N, D), or (N, L, D) with ``grid=yes``, float32 of ``pixels`` (N, H, W, 3) uint8 already at the
        input size."""
        count = len(pixels)
        batch = self._prepare(pixels)
        if self.fixed_batch and count != self.batch_size:
            batch = np.concatenate([batch, np.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)])
        try:
            (out,) = self.session.run([self.output], {self.input_name: batch})
        except Exception as exc:  # onnxruntime's own error classes
            height, width = self.size
            raise EncoderError(f"{self.path}: running the model on {len(batch)} pictures of {height}x{width} failed "
                               f"({_first_line(exc)})") from None
        out = np.asarray(out)[:count]
        if self.grid and out.ndim != 4:
            raise EncoderError(f"{self.path}: grid=yes needs a feature map (N, C, H, W), but output {self.output!r} "
                               f"has shape {out.shape}; name another output with onnx:PATH:OUTPUT")
        if out.ndim == 4 and self.grid:
            channels_last = out if self.layout == "nhwc" else out.transpose(0, 2, 3, 1)
            out = channels_last.reshape(count, -1, channels_last.shape[-1])
        elif out.ndim == 4:
            out = out.mean(axis=(2, 3) if self.layout == "nchw" else (1, 2))
        elif out.ndim != 2:
            raise EncoderError(f"{self.path}: output {self.output!r} has shape {out.shape}; captionkit takes (N, D) "
                               "vectors and averages (N, C, H, W) feature maps; name another output with "
                               "onnx:PATH:OUTPUT")
        return np.ascontiguousarray(out, dtype=np.float32)

    @property
    def dim(self):
        return self._dim

    def encode(self, images):
        images = list(images)
        if not self.fixed_batch:
            return self._run(images)
        # A model exported for a fixed batch takes exactly that many pictures per run.
        return np.concatenate([self._run(images[k:k + self.batch_size])
                               for k in range(0, len(images), self.batch_size)])

    def identity(self):
        identity = {"sha256": self.sha256, "input": self.input_name, "output": self.output, "size": list(self.size),
                    "layout": self.layout, "resize": self.resize_mode, "range": list(self.pixel_range),
                    "mean": list(self.mean), "std": list(self.std), "channels": self.channels}
        if self.external_data:  # only then: the records of models without external data stay as they were
            identity["external_data"] = self.external_data
        return identity

    def describe(self):
        height, width = self.size
        scaling = ("uint8 pixels" if self.input_type == "tensor(uint8)" else
                   f"pixels scaled to [{self.pixel_range[0]:g}, {self.pixel_range[1]:g}], mean "
                   f"{', '.join(f'{m:g}' for m in self.mean)}, std {', '.join(f'{s:g}' for s in self.std)}")
        regions = f" as a grid of {self.regions} regions" if self.grid else ""
        return (f"input {self.input_name!r} {height}x{width} {self.layout.upper()} {self.channels.upper()} "
                f"({self.resize_mode}), {scaling}; output {self.output!r}{regions}")


def _is_image_input(arg):
    shape = list(arg.shape)
    types = (*_FLOAT_TYPES, "tensor(uint8)")
    return arg.type in types and len(shape) == 4 and (shape[1] == 3 or shape[3] == 3)


def _describe_args(args):
    return ", ".join(f"{a.name} ({a.type}, {list(a.shape)})" for a in args) or "none"


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
