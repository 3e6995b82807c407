"""captionkit-torchvision: the ``resnet50`` and ``vgg16`` image encoders for captionkit (see README.md).

Importing this package imports neither torch nor torchvision; an encoder imports them when it is built.
"""
from captionkit_torchvision.encoders import (
    ResNet50Encoder,
    VGG16Encoder,
    missing_weights_message,
    torch_hub_dir,
    unreadable_weights_message,
    weights_directory,
)

__version__ = "0.1.0"

__all__ = [
    "ResNet50Encoder",
    "VGG16Encoder",
    "missing_weights_message",
    "torch_hub_dir",
    "unreadable_weights_message",
    "weights_directory",
]
