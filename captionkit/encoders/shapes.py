"""The ``shapes`` encoder: the built-in dataset's weight-free 512-d features, for pictures of any size.

The features (:func:`captionkit.synthetic.extract_features`) are defined on 64x64 pictures; other sizes are
resized to 64x64 as a whole (aspect ratio not kept: a crop could cut off the shapes the captions talk about), with
area averaging when shrinking, so a picture enlarged by a whole factor with nearest-neighbour pixels comes back
exactly. They describe flat coloured shapes on a dark background, not photographs: this encoder is for the
built-in dataset's pictures, offline experiments and tests.

With ``grid=K`` it gives a grid of K x K regions instead, for attention models: the picture is resized as a whole
to (64 K) x (64 K) and each of its K x K cells of 64x64 pixels gets the same 512-d descriptor the pooled encoder
gives a whole picture, so a region's features say which colours and shapes lie in it (a cell holding nothing reads
as an empty scene). Regions are numbered row by row from the top left: (N, K*K, 512).
"""
import numpy as np

from captionkit.encoders.base import Encoder, EncoderError
from captionkit.images import resize
from captionkit.synthetic.features import FEATURE_DIM, FEATURES_VERSION, extract_features

__all__ = ["MAX_GRID", "ShapesEncoder"]

SIZE = 64
# Cells a side: 16 x 16 cells take a 1024x1024 picture and 256 descriptors (1 MB of float32 features) a picture.
MAX_GRID = 16


class ShapesEncoder(Encoder):
    output_dim = FEATURE_DIM
    batch_size = 256
    option_help = {"grid": f"K: a K x K grid of region features (1 to {MAX_GRID}) instead of one vector a picture"}
    summary = "the built-in dataset's weight-free features of coloured shapes (pictures resized to 64x64)"

    def __init__(self, argument=None, options=None):
        super().__init__(argument, options)
        self.grid = None if "grid" not in self.options else _grid_size(self.options["grid"])
        if self.grid is not None:
            self.regions = self.grid * self.grid
            self.batch_size = max(1, type(self).batch_size // self.regions)  # a batch holds as many cells as before

    @property
    def decode_size(self):
        side = SIZE * (self.grid or 1)
        return (side, side)

    def encode(self, images):
        if self.grid is None:
            return extract_features(np.stack([self.reduce(image) for image in images]))
        features = np.empty((len(images), self.regions, FEATURE_DIM), dtype=np.float32)
        # A batch of pictures at a time: enlarged to (64 K)^2 pixels, a whole split at once would take gigabytes.
        for start in range(0, len(images), self.batch_size):
            pictures = np.stack([self.reduce(image) for image in images[start:start + self.batch_size]])
            count, cells = len(pictures), self.grid
            # (n, K*64, K*64, 3) -> (n, K, K, 64, 64, 3): cell (row, column) of each picture, then one batch of cells.
            blocks = pictures.reshape(count, cells, SIZE, cells, SIZE, 3).transpose(0, 1, 3, 2, 4, 5)
            cell_features = extract_features(blocks.reshape(-1, SIZE, SIZE, 3))
            features[start:start + count] = cell_features.reshape(count, self.regions, FEATURE_DIM)
        return features

    def reduce(self, image):
        side = SIZE * (self.grid or 1)
        return resize(image, side, side)

    def identity(self):
        return {"features_version": FEATURES_VERSION}

    def describe(self):
        if self.grid is None:
            return self.summary
        side = SIZE * self.grid
        return (f"the built-in dataset's weight-free features of coloured shapes on a {self.grid}x{self.grid} grid "
                f"(pictures resized to {side}x{side}, one 512-d vector per 64x64 cell)")


def _grid_size(text):
    try:
        cells = int(str(text).strip())
    except ValueError:
        cells = None
    if cells is None or not 1 <= cells <= MAX_GRID:
        raise EncoderError(f"encoder 'shapes': option grid={text!r} must be a whole number of cells a side, "
                           f"1 to {MAX_GRID}")
    return cells
