"""Image encoders: what turns picture files into the feature vectors a captioning model reads.

Encoders are plugins, as cells are: ``shapes`` (the built-in dataset's weight-free features) and ``onnx`` (any image
model in an ONNX file, run with onnxruntime) are built in; others come from the entry-point group
``captionkit.encoders`` (``plugins/captionkit-torchvision``: ResNet-50 and VGG-16). :mod:`.pipeline` runs an
encoder over files, fits the optional PCA, and records both so that later pictures get the same features.
"""
from captionkit.encoders.base import Encoder, EncoderError
from captionkit.encoders.registry import (
    ENTRY_POINT_GROUP,
    EncoderRegistry,
    available_encoders,
    encoder_info,
    get_encoder,
    make_encoder,
    register_encoder,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Encoder",
    "EncoderError",
    "EncoderRegistry",
    "available_encoders",
    "encoder_info",
    "get_encoder",
    "make_encoder",
    "register_encoder",
]
