"""`captionkit data ...`: make, check and fetch datasets in the COCO captioning bundle layout."""
from pathlib import Path

import click
import numpy as np

from captionkit import synthetic
from captionkit.data import BundleError, decode_captions, load_coco_data
from captionkit.fetch import BUNDLES, FetchError, fetch_bundle


@click.group()
def data():
    """Make, inspect and fetch datasets in the COCO captioning bundle layout."""


@data.command("fetch")
@click.argument("name", type=click.Choice(sorted(BUNDLES)))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", help="Download from this URL instead (a mirror, or file:///path to a local copy of the archive).")
@click.option("--sha256", help="Expected SHA-256 of the archive (64 hex digits); overrides captionkit's recorded one.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds to wait for the server before giving up.")
def fetch(name, directory, url, sha256, timeout):
    """Download bundle NAME, verify it and unpack it so that DIRECTORY holds its files.

    `coco` is the CS231n COCO captioning bundle (captions, vocabulary, VGG-16 fc7 PCA features, image URLs).
    DIRECTORY must not exist or be empty; it appears only once the bundle is complete.
    """
    click.echo(f"downloading {url or BUNDLES[name].url}")
    progress = _DownloadProgress()
    try:
        result = fetch_bundle(name, directory, url=url, sha256=sha256, progress=progress, timeout=timeout)
    except (FetchError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    finally:
        progress.close()
    click.echo(f"fetched {name} into {result.directory} ({result.size} bytes, SHA-256 {result.sha256})")
    if not result.checksum_verified:
        click.echo(f"warning: captionkit has no recorded SHA-256 for {name!r}, so only the download's size and the "
                   "zip's CRCs were checked, not that it is the genuine archive; pass --sha256 to check it.", err=True)


class _DownloadProgress:
    """Renders fetch_bundle's progress(done, total) calls: a bar when the size is known, else a line per 64 MiB."""

    _STEP = 64 * 1024 * 1024

    def __init__(self):
        self._bar = None
        self._shown = 0

    def __call__(self, done, total):
        if total:
            if self._bar is None:
                self._bar = click.progressbar(length=total, label="downloading")
                self._bar.__enter__()
            self._bar.update(done - self._shown)
        elif done // self._STEP > self._shown // self._STEP:
            click.echo(f"  {done // (1024 * 1024)} MiB downloaded")
        self._shown = done

    def close(self):
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


@data.command("synth")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=click.IntRange(min=0), default=synthetic.DEFAULT_SEED, show_default=True,
              help="Random seed; the same seed and sizes always give the same files.")
@click.option("--num-train", type=click.IntRange(min=1), default=synthetic.DEFAULT_NUM_TRAIN, show_default=True,
              help="Number of training images (five captions each).")
@click.option("--num-val", type=click.IntRange(min=1), default=synthetic.DEFAULT_NUM_VAL, show_default=True,
              help="Number of validation images, all different from the training ones.")
def synth(directory, seed, num_train, num_val):
    """Generate captionkit's synthetic shapes dataset into DIRECTORY, in the COCO captioning bundle layout.

    DIRECTORY must not exist or be empty; it appears only once the bundle is complete. This is the dataset
    `captionkit train` uses by default (see docs/dataset.md).
    """
    def progress(stage, done, total):
        click.echo(f"  {stage}: {done}/{total}")

    try:
        result = synthetic.write_bundle(directory, seed=seed, num_train=num_train, num_val=num_val, progress=progress)
    except (FileExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {num_train} train and {num_val} val images, five captions each, to {result}")


@data.command("inspect")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--raw-features", is_flag=True, help="Load the non-PCA features (*_vgg16_fc7.h5) instead of *_pca.h5.")
@click.option("--examples", type=click.IntRange(min=0), default=5, show_default=True,
              help="How many decoded training captions to show, each of a different image.")
def inspect(directory, raw_features, examples):
    """Load the bundle in DIRECTORY, check it, and print its statistics and a few decoded captions."""
    try:
        bundle = load_coco_data(directory, pca_features=not raw_features)
    except BundleError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"bundle {directory}")
    for split in ("train", "val"):
        captions, features = bundle[f"{split}_captions"], bundle[f"{split}_features"]
        num_images = features.shape[0]
        click.echo(f"  {split}: {captions.shape[0]} captions {captions.shape} {captions.dtype} of {num_images} images "
                   f"({captions.shape[0] / max(num_images, 1):.1f} per image); features {features.shape} "
                   f"{features.dtype}")
    idx_to_word = bundle["idx_to_word"]
    click.echo(f"  vocabulary: {len(idx_to_word)} words including {', '.join(idx_to_word[:4])}")
    lengths, counts = _caption_statistics(bundle["train_captions"], bundle["word_to_idx"], len(idx_to_word))
    values, frequency = np.unique(lengths, return_counts=True)
    click.echo(f"  train caption length in words: min {lengths.min()}, mean {lengths.mean():.1f}, "
               f"max {lengths.max()}")
    click.echo("    " + ", ".join(f"{value}: {count}" for value, count in zip(values, frequency)))
    ranked = [idx for idx in np.argsort(-counts, kind="stable") if counts[idx] > 0]
    click.echo("  most common words: " + ", ".join(f"{idx_to_word[i]} ({counts[i]})" for i in ranked[:15]))
    unused = len(idx_to_word) - 4 - len([i for i in ranked if i >= 4])
    click.echo(f"  words never used in train captions: {unused}; <UNK> tokens: {counts[3]}")
    _, first_rows = np.unique(bundle["train_image_idxs"], return_index=True)  # one caption per image
    rows = np.sort(first_rows)[:examples]
    for caption, image_idx in zip(decode_captions(bundle["train_captions"][rows], idx_to_word),
                                  bundle["train_image_idxs"][rows]):
        click.echo(f"  {bundle['train_urls'][image_idx]}  {caption}")


def _caption_statistics(captions, word_to_idx, vocab_size):
    """Per-caption word counts (without <START>, <END>, <NULL>) and per-id occurrence counts of word ids."""
    special = [word_to_idx[token] for token in ("<NULL>", "<START>", "<END>")]
    is_word = ~np.isin(captions, special)
    # Words after <END> (there should be none) are not part of the caption.
    before_end = np.cumsum(captions == word_to_idx["<END>"], axis=1) == 0
    lengths = (is_word & before_end).sum(axis=1)
    counts = np.bincount(captions[is_word & before_end], minlength=vocab_size)
    return lengths, counts
