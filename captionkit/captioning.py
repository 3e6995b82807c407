"""Captions for picture files: a trained run's model, fed the features its training pictures had.

:func:`caption_images` (and ``captionkit caption``) builds the encoder the run recorded (``RUN/encoder.json``, with
``RUN/pca.h5`` when its features were PCA-reduced; :mod:`captionkit.encoders.pipeline`), checks that it gives
what the model was trained on, encodes the pictures and decodes one caption each.
"""
from pathlib import Path

from captionkit.layout import ENCODER_FILE
from captionkit.encoders.base import EncoderError
from captionkit.encoders.pipeline import FeaturePipeline
from captionkit.decoding import greedy_attention
from captionkit.evaluation import DEFAULT_BATCH_SIZE, caption_text, generate_captions
from captionkit.images import MAX_PICTURE_PIXELS, find_images
from captionkit.loading import load_model
from captionkit.runs import resolve_checkpoint, run_dir_of
from captionkit.spec import SpecMismatch
from captionkit.vocabulary import caption_words

__all__ = ["DEFAULT_MAX_LENGTH", "attended_captions", "caption_images", "load_captioner"]

DEFAULT_MAX_LENGTH = 20  # words per caption, <END> included; the bundles captionkit writes hold at most 16 words


def load_captioner(run, checkpoint=None, precision=None):
    """(model, info, pipeline) of a run directory (its ``checkpoint``: None is its best when it has one, else its
    latest; see :func:`captionkit.loading.load_model`) or one of its checkpoint files, the model's products at
    ``precision`` (None: as the run was trained).

    Raises EncoderError when the run records no encoder (trained on a bundle whose features captionkit cannot
    make, e.g. the CS231n COCO bundle), when the recorded encoder no longer gives the same features, or when its
    output does not fit the model; EncoderLoadError when the encoder's plugin is not installed.
    """
    chosen = resolve_checkpoint(run, checkpoint)
    run_dir = run_dir_of(chosen)
    if run_dir is None:
        raise EncoderError(f"{chosen}: not inside a run directory (RUN/checkpoints/ckpt-*.npz); captions need "
                           f"the run's {ENCODER_FILE}")
    if not (run_dir / ENCODER_FILE).is_file():
        raise EncoderError(
            f"{run_dir}: this run records no image encoder ({ENCODER_FILE}): it was trained on a dataset whose "
            "features captionkit cannot make from pictures (such as the CS231n COCO bundle, whose VGG-16 PCA was "
            "not published). Train on a bundle from `captionkit data import` or the built-in dataset to caption "
            "pictures"
        )
    model, info = load_model(chosen, precision=precision)
    pipeline = FeaturePipeline.load(run_dir)
    try:
        model.spec.fits(feature_shape=pipeline.feature_shape, features="the recorded encoder's features")
    except SpecMismatch as exc:
        raise EncoderError(f"{run_dir / ENCODER_FILE}: {exc}") from None
    return model, info, pipeline


def caption_images(run_dir, paths, beam_size=1, max_length=DEFAULT_MAX_LENGTH, length_penalty=0.0,
                   batch_size=DEFAULT_BATCH_SIZE, progress=None, skip_unreadable=False, max_pixels=MAX_PICTURE_PIXELS,
                   return_attention=False, checkpoint=None, precision=None, loaded=None):
    """One caption for each picture file in ``paths`` (directories are walked for image files).

    ``run_dir``: a run directory written by ``captionkit train`` or one of its checkpoint files; ``checkpoint``
    chooses among the run's checkpoints as in :func:`load_captioner` (default: its best), ``precision`` how the
    model's products run (default: as the run was trained), and ``loaded(info)``, if
    given, hears which one was loaded (``info`` as :func:`captionkit.loading.load_model` returns it). Returns
    ``[{"image": path as a string, "caption": text}, ...]`` in the order found.
    ``progress(stage, done, total)`` with stages ``"encoding"`` and ``"captions"``. Raises ImageFileError naming a
    missing or unreadable file, and the errors of :func:`load_captioner`. With ``skip_unreadable``, such a file is
    kept in the list as ``{"image", "caption": None, "error": message}`` and the others are captioned. A picture
    of more than ``max_pixels`` pixels counts as unreadable (:func:`captionkit.images.read_image`).
    ``return_attention`` (an attention model, greedy decoding): each captioned entry also has ``words``, the
    caption's words, and ``attention``, an array (len(words), L) of where the model looked for each.
    """
    if return_attention and beam_size != 1:
        raise ValueError("attention weights come from greedy decoding: use beam_size=1 with return_attention")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = find_images(paths)
    model, info, pipeline = load_captioner(run_dir, checkpoint, precision)
    if loaded is not None:
        loaded(info)
    encoding = None if progress is None else (lambda done, total: progress("encoding", done, total))
    if skip_unreadable:
        features, skipped = pipeline.encode_files(files, encoding, skip_unreadable=True, max_pixels=max_pixels)
    else:
        features, skipped = pipeline.encode_files(files, encoding, max_pixels=max_pixels), []
    errors = dict(skipped)
    readable = [row for row in range(len(files)) if row not in errors]
    if return_attention:
        entries = attended_captions(model, features[readable], max_length, batch_size, progress)
    else:
        ids = generate_captions(model, features[readable], max_length, beam_size=beam_size,
                                length_penalty=length_penalty, batch_size=batch_size, progress=progress)
        entries = [{"caption": caption_text(row, model.idx_to_word)} for row in ids]
    captioned = dict(zip(readable, entries))
    return [{"image": str(path), **captioned[row]} if row in captioned else
            {"image": str(path), "caption": None, "error": errors[row]} for row, path in enumerate(files)]


def attended_captions(model, features, max_length, batch_size, progress):
    """[{caption, words, attention (len(words), L)}] of greedy decoding with its weights, batch by batch."""
    if model.spec.attention is None:
        raise ValueError(f"the run's model ({model.spec.describe()}) has no attention, so no attention maps")
    entries = []
    for start in range(0, features.shape[0], batch_size):
        ids, weights = greedy_attention(model, features[start:start + batch_size], max_length)
        for row_ids, row_weights in zip(ids, weights):
            read = caption_words(row_ids, model.idx_to_word)
            words = [word for _, word in read]
            entries.append({"caption": " ".join(words), "words": words,
                            "attention": row_weights[[t for t, _ in read]]})
        if progress is not None:
            progress("captions", min(start + batch_size, features.shape[0]), features.shape[0])
    return entries
