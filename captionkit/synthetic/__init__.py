"""captionkit's built-in dataset: rendered shape scenes, grounded captions and weight-free image features.

No captioned photographs can be downloaded where captionkit is developed, so it makes a dataset: 64x64 RGB scenes of
one to three shapes (`scenes`), five true captions each from a small grammar (`grammar`), a fixed 512-d descriptor
of the pixels (`features`), all written in the COCO captioning bundle layout (`bundle`) so one loader,
`captionkit.data.load_coco_data`, serves both; or as picture files with a Karpathy split file (`pictures`), as
one's own photos would come. See docs/dataset.md.
"""
from captionkit.synthetic.bundle import (
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    builtin_dataset_dir,
    write_bundle,
)
from captionkit.synthetic.features import extract_features
from captionkit.synthetic.grammar import is_true, named_object
from captionkit.synthetic.pictures import write_pictures
from captionkit.synthetic.scenes import grid_coverage

__all__ = [
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "builtin_dataset_dir",
    "extract_features",
    "grid_coverage",
    "is_true",
    "named_object",
    "write_bundle",
    "write_pictures",
]
