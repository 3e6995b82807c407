"""captionkit: recurrent image-captioning models on a CPU.

The main entry points: :class:`CaptioningRNN` (the model, generic over recurrent cells), :class:`CaptioningSolver`
(training), :mod:`captionkit.layers` (numpy reference layers), :mod:`captionkit.cells` (the cell registry),
:mod:`captionkit.data` (the COCO captioning bundle), :func:`train` (a whole training run, as ``captionkit train``
does), :func:`load_model` (a trained model from a run or checkpoint) and the ``captionkit`` command line.
"""
from captionkit._about import __version__, get_include  # noqa: E402  (the version is declared there once)
from captionkit.model import CaptioningRNN  # noqa: E402
from captionkit.solver import CaptioningSolver  # noqa: E402
from captionkit.loading import load_model  # noqa: E402
from captionkit.training import train  # noqa: E402

__all__ = ["CaptioningRNN", "CaptioningSolver", "__version__", "get_include", "load_model", "train"]
