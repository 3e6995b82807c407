"""Drawing a split of the synthetic dataset: scenes, their pixels and their captions, from one random generator."""
import hashlib
from dataclasses import dataclass

import numpy as np

from captionkit.synthetic.grammar import sample_captions
from captionkit.synthetic.scenes import IMAGE_SIZE, render_scene, sample_scene

CAPTIONS_PER_IMAGE = 5
PROGRESS_EVERY = 500  # images between progress reports


@dataclass
class Split:
    """One split: scenes[i] rendered as images[i] (N, 64, 64, 3) uint8 and described by captions[i] (word tuples)."""

    scenes: list
    images: np.ndarray
    captions: list


def image_digest(image):
    """A stable fingerprint of one image's pixels, used to keep splits disjoint."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()


def generate_split(rng, num_images, name="split", exclude=frozenset(), progress=None):
    """Draw num_images scenes with rng (numpy Generator), render and caption each.

    exclude: digests (see `image_digest`) of images another split already holds; a scene rendering to one of them, or
    repeating an image of this split, is redrawn so splits never share an image.
    progress: optional callable(stage, done, total) told about every PROGRESS_EVERY images.
    """
    scenes, captions = [], []
    images = np.empty((num_images, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    seen = set(exclude)
    while len(scenes) < num_images:
        scene = sample_scene(rng)
        image = render_scene(scene, rng)
        digest = image_digest(image)
        if digest in seen:
            continue
        seen.add(digest)
        images[len(scenes)] = image
        scenes.append(scene)
        captions.append(sample_captions(scene, rng, count=CAPTIONS_PER_IMAGE))
        if progress is not None and (len(scenes) % PROGRESS_EVERY == 0 or len(scenes) == num_images):
            progress(f"drawing {name} scenes", len(scenes), num_images)
    return Split(scenes=scenes, images=images, captions=captions)
