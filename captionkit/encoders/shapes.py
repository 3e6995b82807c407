"""The ``shapes`` encoder: the built-in dataset's weight-free 512-d features, for pictures of any size.

The features (:func:`captionkit.synthetic.extract_features`) are defined on 64x64 pictures; other sizes are
resized to 64x64 as a whole (aspect ratio not kept: a crop could cut off the shapes the captions talk about), with
area averaging when shrinking, so a picture enlarged by a whole factor with nearest-neighbour pixels comes back
exactly. They describe flat coloured shapes on a dark background, not photographs: this encoder is for the
built-in dataset's pictures, offline experiments and tests.
"""
import numpy as np

from captionkit.encoders.base import Encoder
from captionkit.images import resize
from captionkit.synthetic.features import FEATURE_DIM, FEATURES_VERSION, extract_features

__all__ = ["ShapesEncoder"]

SIZE = 64


class ShapesEncoder(Encoder):
    output_dim = FEATURE_DIM
    batch_size = 256
    summary = "the built-in dataset's weight-free features of coloured shapes (pictures resized to 64x64)"
    decode_size = (SIZE, SIZE)

    def encode(self, images):
        return extract_features(np.stack([self.reduce(image) for image in images]))

    def reduce(self, image):
        return resize(image, SIZE, SIZE)

    def identity(self):
        return {"features_version": FEATURES_VERSION}
