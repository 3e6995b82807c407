"""`captionkit report`: a results page of a split's pictures with one or more runs' captions and scores."""
import sys
from pathlib import Path

import click

from captionkit.cli.checkpoints import checkpoint_option, say_checkpoint
from captionkit.cli.terminal import quoted
from captionkit.data import SPLITS
from captionkit.evaluation import DEFAULT_BATCH_SIZE
from captionkit.report import write_report


def _progress():
    """Caption generation's progress on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(stage, done, total):
        sys.stderr.write(f"\r  generating captions: {done}/{total}   " + ("\n" if done == total else ""))
        sys.stderr.flush()

    return show


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False), metavar="RUN...")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Folder to write: index.html, the pictures' thumbnails and the plots. A new or empty folder, or "
                   "an earlier report's (which is replaced).")
@checkpoint_option
@click.option("--split", type=click.Choice(SPLITS), default="val", show_default=True,
              help="Dataset split whose pictures are shown.")
@click.option("--max-images", type=click.IntRange(min=1), default=None, metavar="N",
              help="Show only the first N images of the split (by index), as `captionkit evaluate --max-images N` "
                   "scores them. Default: all (use it on large splits such as COCO's).")
@click.option("--beam", "beam_size", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Beam width: 1 is greedy decoding (and shows an attention model's per-word maps); 3 to 5 usually "
                   "gives more probable captions.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Dataset directory. Default: the one the runs were trained on (from their checkpoints).")
@click.option("--online", is_flag=True,
              help="Show web pictures (a COCO bundle's URLs) inline, loaded from the web when the page is opened. "
                   "Default: they are links, and the page needs no network.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              metavar="N", help="Images captioned at once; lower it to save memory.")
def report(runs, out_dir, checkpoint, split, max_images, beam_size, data_dir, online, batch_size):
    """Write a results page: each picture of a split with each RUN's caption, its references and scores.

    Each RUN is a run directory written by `captionkit train` (its best checkpoint: --checkpoint). DIR/index.html
    opens from disk in any browser, with no server and no network, and the folder can be zipped and shared. It
    shows each run (cell, sizes, the options that differ, iterations, time, best validation, its plots) and a
    table of pictures: thumbnail, generated caption, reference captions, per-picture CIDEr-D (whose mean is the
    corpus CIDEr-D that `captionkit evaluate` prints for the same images) and sentence BLEU-4. Rows start worst
    first; click a score's heading to sort by it, type a word to show only the pictures whose captions or
    references have it. With several runs, each row has every run's caption and the CIDEr-D difference. For an
    attention model, click a word to see where the model looked for it.

    \b
    Examples:
      captionkit report runs/rnn-20260101-120000 --out report/
      captionkit report runs/rnn-a runs/lstm-b --out compare-report/ --max-images 200 --beam 3
    """
    page = write_report(runs, out_dir, split=split, max_images=max_images, beam_size=beam_size, online=online,
                        checkpoint=checkpoint, data_dir=data_dir, batch_size=batch_size, progress=_progress(),
                        loaded=say_checkpoint)
    click.echo(f"wrote {quoted(page)}")
