"""What captionkit says about itself: its version and where its shipped headers are.

A leaf module, so that the checkpoint writer, the plugin loader and the pointwise builder can ask without importing
the package's ``__init__`` (which imports the model and training, layers above them).
"""
from pathlib import Path

__all__ = ["__version__", "get_include"]

__version__ = "0.1.0"


def get_include():
    """The directory to put on Cython's include path so that a plugin's compiled pointwise part can
    ``from captionkit._ext.pointwise cimport ...`` (captionkit ships that .pxd; docs/cells.md)."""
    return str(Path(__file__).resolve().parent.parent)
