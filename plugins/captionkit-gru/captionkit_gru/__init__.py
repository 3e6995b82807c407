"""captionkit-gru: a GRU cell for captionkit, registered as ``gru`` in the entry-point group ``captionkit.cells``."""
from captionkit_gru.cell import GRUCell

__version__ = "0.1.0"

__all__ = ["GRUCell", "__version__"]
