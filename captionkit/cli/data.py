"""`captionkit data ...`: make, check and fetch datasets in the COCO captioning bundle layout."""
from pathlib import Path

import sys

import click
import numpy as np

from captionkit import synthetic
from captionkit.cli.params import FiniteFloat, max_picture_pixels_option
from captionkit.data import SPLITS, BundleError, decode_captions, load_coco_data
from captionkit.encoders.registry import make_encoder, parse_options
from captionkit.encoders.shapes import MAX_GRID
from captionkit.fetch import BUNDLES, DEFAULT_DEADLINE, FetchError, FetchInterrupted, fetch_bundle, parse_size
from captionkit.importing import DEFAULT_MAX_WORDS, DEFAULT_MIN_COUNT, import_dataset
from captionkit.vocabulary import END, NULL, SPECIAL_TOKENS, START, UNK


@click.group()
def data():
    """Make, inspect and fetch datasets in the COCO captioning bundle layout."""


@data.command("fetch")
@click.argument("name", type=click.Choice(sorted(BUNDLES)))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", help="Download from this URL instead (a mirror, or file:///path to a local copy of the archive).")
@click.option("--sha256", help="Expected SHA-256 of the archive (64 hex digits); overrides captionkit's recorded one.")
@click.option("--timeout", type=FiniteFloat(above=True), default=60.0, show_default=True,
              help="Seconds to wait for the server before giving up (to connect, and for each read).")
@click.option("--max-time", "max_time", type=FiniteFloat(above=True), default=DEFAULT_DEADLINE,
              show_default=True, metavar="SECONDS",
              help="Give up when the whole download has not finished in this many seconds, however the server "
                   "paces it.")
@click.option("--max-size", "max_size", default="16GiB", show_default=True, metavar="SIZE",
              help="Give up when the download grows beyond this: bytes, or a number with K, M, G, T (powers of "
                   "1024) or KB, MB, GB, TB (powers of 1000). A known or announced archive size is the bound when "
                   "smaller.")
def fetch(name, directory, url, sha256, timeout, max_time, max_size):
    """Download bundle NAME, verify it and unpack it so that DIRECTORY holds its files.

    `coco` is the CS231n COCO captioning bundle (captions, vocabulary, VGG-16 fc7 PCA features, image URLs).
    DIRECTORY must not exist or be empty; it appears only once the bundle is complete. On an error, Ctrl-C or
    SIGTERM nothing is kept; a partial download left by a killed fetch is removed by the next fetch of DIRECTORY.
    """
    try:
        max_bytes = parse_size(max_size)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--max-size") from err

    def removed(folder, size):
        click.echo(f"removed a partial download left by an earlier fetch: {folder} ({size} bytes)")

    click.echo(f"downloading {url or BUNDLES[name].url}")
    progress = _DownloadProgress()
    try:
        result = fetch_bundle(name, directory, url=url, sha256=sha256, progress=progress, timeout=timeout,
                              deadline=max_time, max_size=max_bytes, on_removed=removed)
    except FetchInterrupted as err:
        progress.close()
        click.echo(str(err), err=True)
        raise click.exceptions.Exit(128 + err.signum) from err  # the shell's status for "ended by this signal"
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
            self._bar = None


@data.command("synth")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=click.IntRange(min=0), default=synthetic.DEFAULT_SEED, show_default=True,
              help="Random seed; the same seed and sizes always give the same files.")
@click.option("--num-train", type=click.IntRange(min=1), default=synthetic.DEFAULT_NUM_TRAIN, show_default=True,
              help="Number of training images (five captions each).")
@click.option("--num-val", type=click.IntRange(min=1), default=synthetic.DEFAULT_NUM_VAL, show_default=True,
              help="Number of validation images, all different from the training ones.")
@click.option("--pictures", is_flag=True,
              help="Write PNG files and a Karpathy split file (dataset_shapes.json) instead of a bundle: the input "
                   "of `captionkit data import`, for trying the own-data path offline.")
@click.option("--num-test", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --pictures: number of test images, different from the others.")
@click.option("--scale", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --pictures: enlarge each 64x64 picture this many times.")
@click.option("--grid", type=click.IntRange(min=1, max=MAX_GRID), default=None, metavar="K",
              help="Features on a K x K grid of image regions, (images, K*K, 512), for attention models: the "
                   "shapes encoder's grid=K, recorded in encoder.json. 4 gives each 16x16 pixel cell its own "
                   "descriptor (a 9000-image bundle then takes 300 MB).")
def synth(directory, seed, num_train, num_val, pictures, num_test, scale, grid):
    """Generate captionkit's synthetic shapes dataset into DIRECTORY, as a bundle in the COCO captioning layout
    (or, with --pictures, as picture files with their captions).

    DIRECTORY must not exist or be empty; it appears only once complete. The bundle is the dataset
    `captionkit train` uses by default (see docs/dataset.md).
    """
    if not pictures and (num_test or scale != 1):
        raise click.UsageError("--num-test and --scale apply to --pictures only")
    if pictures and grid is not None:
        raise click.UsageError("--grid applies to bundles; picture files get their features from `captionkit data "
                               "import --encoder shapes --encoder-option grid=K`")

    def progress(stage, done, total):
        click.echo(f"  {stage}: {done}/{total}")

    try:
        if pictures:
            result = synthetic.write_pictures(directory, seed=seed, num_train=num_train, num_val=num_val,
                                              num_test=num_test, scale=scale, progress=progress)
        else:
            result = synthetic.write_bundle(directory, seed=seed, num_train=num_train, num_val=num_val,
                                            progress=progress, grid=grid)
    except (FileExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    sizes = f"{num_train} train, {num_val} val" + (f" and {num_test} test" if num_test else "")
    regions = "" if grid is None else f", features on a {grid}x{grid} grid"
    click.echo(f"wrote {sizes} images, five captions each{regions}, to {result}")


@data.command("import")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), metavar="OUT")
@click.option("--karpathy", "karpathy", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.json",
              help="A Karpathy split file (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json).")
@click.option("--captions", "table", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A caption table instead: CSV with columns image,caption[,split] or JSON lines "
                   '{"image": ..., "caption": ...[, "split": ...]}.')
@click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Folder the image names are relative to. Default: the caption file's folder.")
@click.option("--encoder", "encoder_spec", required=True, metavar="NAME[:ARG]",
              help="Image encoder giving the features (see `captionkit encoders`): shapes, onnx:MODEL.onnx, "
                   "resnet50, ...")
@click.option("--encoder-option", "encoder_options", multiple=True, metavar="KEY=VALUE",
              help="An option of the encoder, e.g. size=224 or mean=0.485,0.456,0.406 for onnx, grid=4 for shapes "
                   "(a 4x4 grid of region features), grid=yes for onnx (keep a feature map's positions as "
                   "regions) (repeatable).")
@click.option("--min-count", type=click.IntRange(min=1), default=DEFAULT_MIN_COUNT, show_default=True,
              help="Words seen fewer times in the training captions become <UNK>.")
@click.option("--max-words", type=click.IntRange(min=1), default=DEFAULT_MAX_WORDS, show_default=True,
              help="Longer captions are cut to this many words.")
@click.option("--pca", "pca_dim", type=click.IntRange(min=1), default=None, metavar="K",
              help="Also store the features reduced to K values by a PCA fitted on the training pictures; "
                   "`captionkit train` uses them unless --no-pca.")
@click.option("--skip-missing", is_flag=True,
              help="Leave out pictures that are missing or unreadable (reported) instead of stopping.")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True,
              help="Seed choosing the held-out val pictures of a caption table without splits.")
@click.option("--allow-outside-images", is_flag=True,
              help="Import pictures whose names are absolute or lead out of --images (.., symbolic links); refused "
                   "by default, so a downloaded caption file cannot pull other files into the bundle.")
@max_picture_pixels_option
def import_command(out, karpathy, table, images_dir, encoder_spec, encoder_options, min_count, max_words, pca_dim,
                   skip_missing, seed, allow_outside_images, max_pixels):
    """Make a dataset bundle in OUT from pictures and their captions, for `captionkit train --data OUT`.

    The captions come from a Karpathy split file (--karpathy; its train/val/test splits, restval as train) or a
    caption table (--captions). The vocabulary is every word seen --min-count times in the training captions; the
    features come from --encoder, and the bundle records it, so `captionkit caption` later gives new pictures the
    same features. OUT must not exist or be empty; it appears only once complete, with import.json reporting what
    was imported and dropped.

    \b
    Examples:
      captionkit data import flickr8k --karpathy dataset_flickr8k.json --images Flickr8k --encoder resnet50 --pca 512
      captionkit data import mine --captions captions.csv --encoder onnx:resnet50.onnx
      captionkit data import shapes-pngs --karpathy shapes.json --encoder shapes
    """
    if (karpathy is None) == (table is None):
        raise click.UsageError("give exactly one caption file: --karpathy FILE.json or --captions FILE")
    encoder = make_encoder(encoder_spec, parse_options(encoder_options))
    per_picture = (f"{encoder.dim} values" if encoder.regions is None else
                   f"a grid of {encoder.regions} regions x {encoder.dim} values")
    click.echo(f"encoder {encoder_spec}: {per_picture} per picture; {encoder.describe()}")
    bars = {}

    def progress(stage, done, total):
        if stage not in bars:
            for bar in bars.values():
                bar.render_finish()
            bars[stage] = click.progressbar(length=total, label=stage, file=sys.stderr)
            bars[stage].__enter__()
        bars[stage].update(done - bars[stage].pos)

    try:
        report = import_dataset(out, karpathy or table, encoder, images_dir=images_dir, min_count=min_count,
                                max_words=max_words, pca_dim=pca_dim, skip_missing=skip_missing, seed=seed,
                                progress=progress, allow_outside_images=allow_outside_images,
                                max_pixels=max_pixels)
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)
    for split in SPLITS:
        if split in report.images:
            click.echo(f"  {split}: {report.images[split]} pictures, {report.captions[split]} captions")
    total_words = "" if not report.unknown_words else f"; {report.unknown_words} word occurrences became <UNK>"
    click.echo(f"  vocabulary: {report.vocabulary_size} words (seen at least {min_count} times in train){total_words}")
    if report.cut_captions:
        click.echo(f"  {report.cut_captions} captions were cut to {max_words} words")
    features = f"{report.feature_dim} values" + (f", PCA to {report.pca_dim}" if report.pca_dim else "")
    if report.regions is not None:
        features = f"a grid of {report.regions} regions x {features}"
    click.echo(f"  features: {features}")
    if report.dropped:
        click.echo(f"  dropped ({len(report.dropped)}; all listed in {out / 'import.json'}):")
        for line in report.dropped[:10]:
            click.echo(f"    {line}")
    click.echo(f"wrote {out}; train on it with: captionkit train --data {out}")


@data.command("inspect")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--raw-features", is_flag=True,
              help="Load the encoder's full features instead of their PCA reduction (*_features_pca.h5, or the "
                   "assignment's *_vgg16_fc7_pca.h5), when the bundle has one.")
@click.option("--examples", type=click.IntRange(min=0), default=5, show_default=True,
              help="How many decoded training captions to show, each of a different image.")
def inspect(directory, raw_features, examples):
    """Load the bundle in DIRECTORY, check it, and print its statistics and a few decoded captions."""
    try:
        bundle = load_coco_data(directory, pca_features=not raw_features)
    except BundleError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"bundle {directory}")
    for split in (s for s in SPLITS if f"{s}_captions" in bundle):
        captions, features = bundle[f"{split}_captions"], bundle[f"{split}_features"]
        num_images = features.shape[0]
        click.echo(f"  {split}: {captions.shape[0]} captions {captions.shape} {captions.dtype} of {num_images} images "
                   f"({captions.shape[0] / max(num_images, 1):.1f} per image); features {features.shape} "
                   f"{features.dtype}")
    idx_to_word = bundle["idx_to_word"]
    num_special = len(SPECIAL_TOKENS)  # the special tokens come first, as every vocabulary captionkit reads
    click.echo(f"  vocabulary: {len(idx_to_word)} words including {', '.join(idx_to_word[:num_special])}")
    lengths, counts = _caption_statistics(bundle["train_captions"], bundle["word_to_idx"], len(idx_to_word))
    values, frequency = np.unique(lengths, return_counts=True)
    click.echo(f"  train caption length in words: min {lengths.min()}, mean {lengths.mean():.1f}, "
               f"max {lengths.max()}")
    click.echo("    " + ", ".join(f"{value}: {count}" for value, count in zip(values, frequency)))
    ranked = [idx for idx in np.argsort(-counts, kind="stable") if counts[idx] > 0]
    click.echo("  most common words: " + ", ".join(f"{idx_to_word[i]} ({counts[i]})" for i in ranked[:15]))
    unused = len(idx_to_word) - num_special - len([i for i in ranked if i >= num_special])
    click.echo(f"  words never used in train captions: {unused}; {UNK} tokens: {counts[SPECIAL_TOKENS[UNK]]}")
    _, first_rows = np.unique(bundle["train_image_idxs"], return_index=True)  # one caption per image
    rows = np.sort(first_rows)[:examples]
    for caption, image_idx in zip(decode_captions(bundle["train_captions"][rows], idx_to_word),
                                  bundle["train_image_idxs"][rows]):
        click.echo(f"  {bundle['train_urls'][image_idx]}  {caption}")


def _caption_statistics(captions, word_to_idx, vocab_size):
    """Per-caption word counts (without <START>, <END>, <NULL>) and per-id occurrence counts of word ids."""
    special = [word_to_idx[token] for token in (NULL, START, END)]
    is_word = ~np.isin(captions, special)
    # Words after <END> (there should be none) are not part of the caption.
    before_end = np.cumsum(captions == word_to_idx[END], axis=1) == 0
    lengths = (is_word & before_end).sum(axis=1)
    counts = np.bincount(captions[is_word & before_end], minlength=vocab_size)
    return lengths, counts
