"""captionkit-torchvision: the ``resnet50`` and ``vgg16`` image encoders for captionkit (see README.md).

Importing this package imports neither torch nor torchvision; an encoder imports them when it is built.
"""
# The package's names are those of its one module, listed once there.
from captionkit_torchvision.encoders import *  # noqa: F401,F403
from captionkit_torchvision.encoders import __all__  # noqa: F401

__version__ = "0.1.0"
