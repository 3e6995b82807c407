"""`captionkit caption`: captions for one's own pictures from a trained run."""
import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import click

from captionkit.captioning import DEFAULT_MAX_LENGTH, caption_images
from captionkit.cli.checkpoints import checkpoint_option, say_checkpoint
from captionkit.cli.params import FiniteFloat, max_picture_pixels_option, precision_option
from captionkit.cli.terminal import quoted
from captionkit.images import ImageFileError, find_images, thumbnail
from captionkit.plotting import plot_attention_maps, plot_caption_grid
from captionkit.report import attends, check_folder, write_picture_gallery
from captionkit.safeio import atomic_write_text

OUT_FORMATS = (".json", ".jsonl", ".csv")  # what --out writes, by the file's suffix
GRID_LIMIT = 64  # pictures drawn in a --grid
GRID_SIDE = 256  # pixels a side a picture is shrunk to for the grid

_STAGES = {"encoding": "encoding pictures", "captions": "generating captions"}


def _progress():
    """Progress on stderr when it is a terminal, so that the captions on stdout stay clean."""
    if not sys.stderr.isatty():
        return None

    def show(stage, done, total):
        sys.stderr.write(f"\r  {_STAGES[stage]}: {done}/{total}   " + ("\n" if done == total else ""))
        sys.stderr.flush()

    return show


def _refuse_overwriting_inputs(outputs, files):
    """A usage error when an output file (``--out``, ``--grid``) is one of the input pictures, by any name (the same
    path, a symlink or a hard link to it): writing it would destroy the picture."""
    for option, output in outputs.items():
        if output is None or not output.exists():
            continue
        for path in files:
            if os.path.samefile(output, path):
                raise click.UsageError(f"{option} {quoted(output)} is one of the input pictures ({quoted(path)}); "
                                       "choose another file name")


@click.command("caption")
@click.argument("run", type=click.Path(), metavar="RUN")
@click.argument("images", nargs=-1, required=True, type=click.Path(), metavar="IMAGE_OR_DIR...")
@checkpoint_option
@precision_option
@click.option("--beam", "beam_size", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Beam width: 1 is greedy decoding; 3 to 5 usually gives more probable captions.")
@click.option("--length-penalty", type=FiniteFloat(), default=0.0, show_default=True, metavar="ALPHA",
              help="GNMT length normalisation for beam search (0: plain log-probabilities).")
@click.option("--max-length", type=click.IntRange(min=1), default=DEFAULT_MAX_LENGTH, show_default=True,
              metavar="N", help="Most words per caption, <END> included.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Also write the captions to FILE, in the format its suffix names: .json (a list of "
                                   "{image, caption}), .jsonl (one such object a line) or .csv (columns image, "
                                   "caption, error). Unreadable pictures skipped with --skip-unreadable are listed "
                                   "with their error.")
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE.png",
              help=f"Also draw the pictures with their captions into a PNG grid (first {GRID_LIMIT}).")
@click.option("--html", "html_dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Also write a page of the pictures with their captions into DIR (index.html and thumbnails; "
                   "opens from disk, no network): the gallery `captionkit report` makes, without references. An "
                   "attention model's page shows where it looked for each word (click the word).")
@click.option("--attention-maps", "maps_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE.png",
              help="Draw where an attention model looked for each word of the caption of one picture (greedy "
                   "decoding): a panel per word, the picture lit under that word's attention.")
@click.option("--skip-unreadable", is_flag=True,
              help="Caption the pictures that can be read and report the others (truncated, corrupt, not an image) "
                   "on stderr, instead of stopping at the first; --out lists them with their error.")
@max_picture_pixels_option
def caption(run, images, checkpoint, precision, beam_size, length_penalty, max_length, out_path, grid_path, html_dir,
            maps_path, skip_unreadable, max_pixels):
    """Caption picture files with the model of RUN and print one line per picture: `PATH<TAB>caption`.

    RUN is a run directory written by `captionkit train` (its best checkpoint: --checkpoint) or one of its checkpoint
    files. The pictures go through the image encoder the run was trained with (recorded in RUN/encoder.json), so
    they get the same kind of features as its training pictures; a run without one is refused with the reason.
    Directories are walked for image files (.jpg, .png, ...); files named explicitly are read whatever their suffix.
    Names are printed with control characters escaped (as `ls -b` does), so each picture stays on one line.

    \b
    Examples:
      captionkit caption runs/rnn-20260101-120000 photo.jpg
      captionkit caption runs/rnn-20260101-120000 holiday/ --beam 3 --out captions.json --grid captions.png
      captionkit caption runs/rnn-20260101-120000 holiday/ --html holiday-captions/
      captionkit caption runs/lstm-soft-20260101-120000 photo.jpg --attention-maps photo-attention.png
    """
    loaded = []  # the checkpoint is named once the pictures are read, so that a failure is its one line alone
    try:
        files = find_images(images)
        _refuse_overwriting_inputs({"--out": out_path, "--grid": grid_path, "--attention-maps": maps_path}, files)
        if out_path is not None and out_path.suffix.lower() not in OUT_FORMATS:
            raise click.BadParameter(f"{quoted(out_path)}: the suffix must be one of {', '.join(OUT_FORMATS)}, which "
                                     "name the format written", param_hint="'--out'")
        if maps_path is not None and (len(files) != 1 or beam_size != 1):
            raise click.UsageError("--attention-maps draws the greedy caption of one picture: give one picture and "
                                   "no --beam")
        if html_dir is not None:
            check_folder(html_dir)  # refused before any picture is read, as a wrong --out suffix is
        with_attention = maps_path is not None or (html_dir is not None and beam_size == 1
                                                   and attends(run, checkpoint))
        results = caption_images(run, files, beam_size=beam_size, max_length=max_length,
                                 length_penalty=length_penalty, progress=_progress(),
                                 skip_unreadable=skip_unreadable, max_pixels=max_pixels,
                                 return_attention=with_attention, checkpoint=checkpoint, precision=precision,
                                 loaded=loaded.append)
    except ImageFileError as exc:
        raise click.ClickException(quoted(exc)) from None
    say_checkpoint(loaded[0])
    captioned = [entry for entry in results if entry["caption"] is not None]
    for entry in results:
        if entry["caption"] is None:
            click.echo(f"skipped {quoted(entry['error'])}", err=True)
        else:
            click.echo(f"{quoted(entry['image'])}\t{entry['caption']}")
    if out_path is not None:
        atomic_write_text(out_path, _captions_file_text(results, out_path.suffix.lower()))
        click.echo(f"wrote {quoted(out_path)}", err=True)
    if len(captioned) < len(results):
        click.echo(f"skipped {len(results) - len(captioned)} of {len(results)} pictures that could not be read",
                   err=True)
    if not captioned:
        raise click.ClickException("none of the pictures could be read")
    if grid_path is not None:
        shown = captioned[:GRID_LIMIT]
        pictures = [thumbnail(entry["image"], GRID_SIDE, max_pixels) for entry in shown]
        plot_caption_grid(pictures, [entry["caption"] for entry in shown], None, grid_path,
                          names=[Path(entry["image"]).name for entry in shown])
        more = f" (the first {GRID_LIMIT} of {len(captioned)} pictures)" if len(captioned) > GRID_LIMIT else ""
        click.echo(f"wrote {quoted(grid_path)}{more}", err=True)
    if html_dir is not None:
        page = write_picture_gallery(run, loaded[0], results, html_dir, max_pixels)
        click.echo(f"wrote {quoted(page)}", err=True)
    if maps_path is not None:
        _draw_attention_maps(captioned[0], maps_path, max_pixels)


def _draw_attention_maps(entry, path, max_pixels):
    """The --attention-maps figure of one captioned picture; its L regions are a square grid, rows first."""
    regions = entry["attention"].shape[1]
    side = math.isqrt(regions)
    if side * side != regions:
        raise click.ClickException(f"the model attends over {regions} regions, not a square grid, so they cannot be "
                                   "placed on the picture")
    if not entry["words"]:
        raise click.ClickException(f"the caption of {quoted(entry['image'])} is empty: no word to draw")
    plot_attention_maps(thumbnail(entry["image"], GRID_SIDE, max_pixels), entry["words"], entry["attention"],
                        (side, side), path)
    click.echo(f"wrote {quoted(path)}", err=True)


def _captions_file_text(results, suffix):
    """The --out file's text in the format of ``suffix`` (one of OUT_FORMATS): an entry per picture, its image,
    caption and, for a picture that could not be read, its error."""
    entries = [{k: v for k, v in entry.items() if k in ("image", "caption", "error")} for entry in results]
    if suffix == ".json":
        return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
    if suffix == ".jsonl":
        return "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "caption", "error"])
    writer.writerows([entry["image"], entry["caption"] or "", entry.get("error", "")] for entry in entries)
    return text.getvalue()
