"""captionkit: recurrent image-captioning models on a CPU.

The main entry points: :class:`CaptioningRNN` (the model, generic over recurrent cells), :class:`CaptioningSolver`
(training), :mod:`captionkit.layers` (numpy reference layers), :mod:`captionkit.cells` (the cell registry),
:mod:`captionkit.data` (the COCO captioning bundle), :func:`train` (a whole training run, as ``captionkit train``
does), :func:`load_model` (a trained model from a run or checkpoint) and the ``captionkit`` command line.
"""
__version__ = "0.1.0"

from pathlib import Path  # noqa: E402


def get_include():
    """The directory to put on Cython's include path so that a plugin's compiled pointwise part can
    ``from captionkit._ext.pointwise cimport ...`` (captionkit ships that .pxd; docs/cells.md)."""
    return str(Path(__file__).resolve().parent.parent)


from captionkit.model import CaptioningRNN  # noqa: E402
from captionkit.solver import CaptioningSolver  # noqa: E402
from captionkit.loading import load_model  # noqa: E402
from captionkit.training import train  # noqa: E402

__all__ = ["CaptioningRNN", "CaptioningSolver", "__version__", "get_include", "load_model", "train"]
