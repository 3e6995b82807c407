"""`captionkit caption`: captions for one's own pictures from a trained run."""
import json
import sys
from pathlib import Path

import click

from captionkit.captioning import DEFAULT_MAX_LENGTH, caption_images
from captionkit.cli.checkpoints import checkpoint_option, say_checkpoint
from captionkit.cli.params import FiniteFloat
from captionkit.images import read_image
from captionkit.plotting import plot_caption_grid
from captionkit.safeio import atomic_write_text

_STAGES = {"encoding": "encoding pictures", "captions": "generating captions"}


def _progress():
    """Progress on stderr when it is a terminal, so that the captions on stdout stay clean."""
    if not sys.stderr.isatty():
        return None

    def show(stage, done, total):
        sys.stderr.write(f"\r  {_STAGES[stage]}: {done}/{total}   " + ("\n" if done == total else ""))
        sys.stderr.flush()

    return show


@click.command("caption")
@click.argument("run", type=click.Path(), metavar="RUN")
@click.argument("images", nargs=-1, required=True, type=click.Path(), metavar="IMAGE_OR_DIR...")
@checkpoint_option
@click.option("--beam", "beam_size", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Beam width: 1 is greedy decoding; 3 to 5 usually gives more probable captions.")
@click.option("--length-penalty", type=FiniteFloat(), default=0.0, show_default=True, metavar="ALPHA",
              help="GNMT length normalisation for beam search (0: plain log-probabilities).")
@click.option("--max-length", type=click.IntRange(min=1), default=DEFAULT_MAX_LENGTH, show_default=True,
              metavar="N", help="Most words per caption, <END> included.")
@click.option("--out", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE.json", help="Also write the captions as a JSON list of {image, caption}.")
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE.png", help="Also draw the pictures with their captions into a PNG grid (first 64).")
@click.option("--skip-unreadable", is_flag=True,
              help="Caption the pictures that can be read and report the others (truncated, corrupt, not an image) "
                   "on stderr, instead of stopping at the first; --out lists them with their error.")
def caption(run, images, checkpoint, beam_size, length_penalty, max_length, json_path, grid_path, skip_unreadable):
    """Caption picture files with the model of RUN and print one line per picture: `PATH<TAB>caption`.

    RUN is a run directory written by `captionkit train` (its best checkpoint: --checkpoint) or one of its checkpoint
    files. The pictures go through the image encoder the run was trained with (recorded in RUN/encoder.json), so
    they get the same kind of features as its training pictures; a run without one is refused with the reason.
    Directories are walked for image files (.jpg, .png, ...); files named explicitly are read whatever their suffix.

    \b
    Examples:
      captionkit caption runs/rnn-20260101-120000 photo.jpg
      captionkit caption runs/rnn-20260101-120000 holiday/ --beam 3 --out captions.json --grid captions.png
    """
    loaded = []  # the checkpoint is named once the pictures are read, so that a failure is its one line alone
    results = caption_images(run, images, beam_size=beam_size, max_length=max_length, length_penalty=length_penalty,
                             progress=_progress(), skip_unreadable=skip_unreadable, checkpoint=checkpoint,
                             loaded=loaded.append)
    say_checkpoint(loaded[0])
    captioned = [entry for entry in results if entry["caption"] is not None]
    for entry in results:
        if entry["caption"] is None:
            click.echo(f"skipped {entry['error']}", err=True)
        else:
            click.echo(f"{entry['image']}\t{entry['caption']}")
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        click.echo(f"wrote {json_path}", err=True)
    if len(captioned) < len(results):
        click.echo(f"skipped {len(results) - len(captioned)} of {len(results)} pictures that could not be read",
                   err=True)
    if not captioned:
        raise click.ClickException("none of the pictures could be read")
    if grid_path is not None:
        shown = captioned[:64]
        plot_caption_grid([read_image(e["image"]) for e in shown], [e["caption"] for e in shown], None, grid_path)
        click.echo(f"wrote {grid_path}" + (f" (the first 64 of {len(captioned)} pictures)" if len(captioned) > 64 else ""),
                   err=True)
