"""The built-in dataset as picture files and a Karpathy split file: what `captionkit data import` reads.

``write_pictures(DIR)`` writes ``DIR/images/{split}_{index:06d}.png`` and ``DIR/dataset_shapes.json`` in the
format of Karpathy's ``dataset_flickr8k.json`` (``images``: ``filename``, ``imgid``, ``split``, ``sentences`` with
``tokens`` and ``raw``), plus each picture's ``scene`` (its objects, for :func:`captionkit.synthetic.is_true`),
which other readers ignore. It lets the whole own-data path (import, train, caption) run offline, and lets tests
caption picture files no test has seen as features.
"""
import json
from pathlib import Path

import numpy as np

from captionkit.checks import integer
from captionkit.safeio import staged_directory
from captionkit.synthetic.generate import generate_split, image_digest

__all__ = ["CAPTIONS_FILE", "write_pictures"]

CAPTIONS_FILE = "dataset_shapes.json"


def _save_png(path, pixels, scale):
    from PIL import Image

    if scale > 1:
        pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    Image.fromarray(pixels).save(path, format="PNG")


def write_pictures(directory, seed=0, num_train=400, num_val=50, num_test=50, scale=1, progress=None):
    """Draw scenes of three disjoint splits and write them as PNG files with a Karpathy split file.

    ``scale``: each picture enlarged that many times with repeated pixels (64 x scale pixels square). The directory
    (must not exist, or be empty) appears only once complete. Returns the path of the split file.
    """
    counts = {"train": num_train, "val": num_val, "test": num_test}
    for name, value in [*counts.items(), ("scale", scale), ("seed", seed)]:
        integer(f"num_{name}" if name in counts else name, value, minimum=0 if name in ("test", "seed") else 1)
    directory = Path(directory)
    rngs = [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(len(counts))]
    entries, seen = [], set()
    with staged_directory(directory) as staging:
        (staging / "images").mkdir()
        for rng, (split, count) in zip(rngs, counts.items()):
            if count == 0:
                continue
            drawn = generate_split(rng, count, split, exclude=seen, progress=progress)
            seen.update(image_digest(image) for image in drawn.images)
            for k, (scene, pixels, captions) in enumerate(zip(drawn.scenes, drawn.images, drawn.captions)):
                filename = f"{split}_{k:06d}.png"
                _save_png(staging / "images" / filename, pixels, scale)
                sentences = [{"tokens": list(words), "raw": " ".join(words) + "."} for words in captions]
                entries.append({"filename": filename, "imgid": len(entries), "split": split,
                                "sentences": sentences, "scene": scene.to_dict()})
        document = {"dataset": "shapes", "images": entries}
        (staging / CAPTIONS_FILE).write_text(json.dumps(document), encoding="utf-8")
    return directory / CAPTIONS_FILE
