"""`captionkit sample` and `captionkit evaluate`: what a trained model says about images, and how well."""
import json
import secrets
import sys

import click

from captionkit.loading import load_model
from captionkit.cli.checkpoints import checkpoint_option, say_checkpoint
from captionkit.cli.params import FiniteFloat
from captionkit.data import SPLITS, BundleError, load_coco_data
from captionkit.evaluation import DEFAULT_BATCH_SIZE, evaluate, sample_captions

_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L")
_STAGES = {"perplexity": "scoring ground-truth captions", "captions": "generating captions"}


def _decoding_options(command):
    """The options `sample` and `evaluate` share: which run, data and split, and how to decode."""
    options = [
        click.argument("run", type=click.Path(), metavar="RUN"),
        checkpoint_option,
        click.option("--split", type=click.Choice(SPLITS), default="val", show_default=True,
                     help="Dataset split whose images are captioned."),
        click.option("--beam", "beam_size", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
                     help="Beam width: 1 is greedy decoding; 3 to 5 usually gives more probable captions."),
        click.option("--length-penalty", type=FiniteFloat(), default=0.0, show_default=True,
                     metavar="ALPHA", help="GNMT length normalisation for beam search: 0 compares plain "
                                           "log-probabilities (favours short captions); 0.6 to 1 favours longer ones."),
        click.option("--max-length", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Most words per generated caption, <END> included. Default: the dataset's caption length "
                          "(16 for COCO)."),
        click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
                     help="Dataset directory. Default: the one the run was trained on (from its checkpoint)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _load(run, checkpoint, data_dir):
    """The model of RUN's chosen checkpoint, load_model's info, and the dataset the run was trained on (or
    ``data_dir``); once both are read, the checkpoint is named on stderr (a failure is its one line alone)."""
    model, info = load_model(run, checkpoint=checkpoint)
    config = info["config"]
    try:
        data = load_coco_data(data_dir if data_dir is not None else config.get("data"),
                              pca_features=config.get("pca", True))
    except BundleError as exc:
        if data_dir is not None:
            raise
        raise click.ClickException(f"{exc}\n(This is the dataset {run} was trained on; if it has moved, give its "
                                   "new place with --data DIR.)") from None
    say_checkpoint(info)
    return model, info, data


def _describe_decoding(beam_size, length_penalty):
    if beam_size == 1:
        return "greedy decoding"
    return f"beam search (beam {beam_size}, length penalty {length_penalty:g})"


def _progress():
    """A progress line on stderr when it is a terminal (so --json output and logs stay clean), else None."""
    stream = sys.stderr
    if not stream.isatty():
        return None

    def show(stage, done, total):
        stream.write(f"\r  {_STAGES[stage]}: {done}/{total}   ")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


@click.command("sample")
@_decoding_options
@click.option("--n", "num", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Number of images to caption (all of the split if it has fewer).")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=None, metavar="S",
              help="Seed that picks the images, to see the same ones again. Default: a fresh one, printed.")
@click.option("--json", "json_output", is_flag=True,
              help="Print a JSON list of {image, url, generated, references} instead of text.")
@click.option("--temperature", type=FiniteFloat(above=True), default=None, metavar="T",
              help="Draw each word at random from the model's distribution sharpened (T < 1) or flattened (T > 1), "
                   "instead of decoding greedily. Default when --top-k is given: 1.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, metavar="K",
              help="Draw each word at random among the K most probable ones (with --temperature, or at 1).")
def sample(run, checkpoint, split, beam_size, length_penalty, max_length, data_dir, num, seed, json_output,
           temperature, top_k):
    """Caption N random images with a trained model and print them beside their ground-truth captions.

    RUN is a run directory written by `captionkit train` (its best checkpoint is used, or its latest when it has
    no best; see --checkpoint) or one checkpoint file (RUN/checkpoints/ckpt-*.npz). The dataset is the one the run
    was trained on; COCO images also show their URL.

    \b
    Examples:
      captionkit sample runs/rnn-20260101-120000
      captionkit sample runs/rnn-20260101-120000 --n 4 --beam 3 --seed 7
      captionkit sample runs/rnn-20260101-120000/checkpoints/ckpt-00000500.npz --split train
    """
    model, info, data = _load(run, checkpoint, data_dir)
    if seed is None:
        seed = secrets.randbelow(2**32)
    random_words = temperature is not None or top_k is not None
    if random_words and beam_size != 1:
        raise click.UsageError("--temperature/--top-k draw words at random; --beam searches: use one or the other")
    samples = sample_captions(model, data, split, num=num, beam_size=beam_size, seed=seed, max_length=max_length,
                              length_penalty=length_penalty, temperature=temperature, top_k=top_k)
    if json_output:
        click.echo(json.dumps(samples, indent=2))
        return
    decoding = (f"words drawn at temperature {1.0 if temperature is None else temperature:g}"
                + (f" among the {top_k} most probable" if top_k else "")) if random_words else \
        _describe_decoding(beam_size, length_penalty)
    click.echo(f"{info['checkpoint']} (iteration {info['iteration']}): {len(samples)} {split} images, {decoding}, "
               f"seed {seed}")
    for entry in samples:
        url = entry["url"] or ""
        click.echo(f"\n{split} image {entry['image']}" + (f"  {url}" if url.startswith(("http://", "https://"))
                                                            else ""))
        click.echo(f"  generated:    {entry['generated']}")
        for k, reference in enumerate(entry["references"]):
            click.echo(f"  {'ground truth:' if k == 0 else '':13} {reference}")


@click.command("evaluate")
@_decoding_options
@click.option("--max-images", type=click.IntRange(min=1), default=None, metavar="N",
              help="Evaluate only the first N images of the split (by index), for a quick look. Default: all.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              metavar="N", help="Images (or captions, for perplexity) processed at once; lower it to save memory.")
@click.option("--json", "json_output", is_flag=True,
              help="Print the results as one JSON object.")
def evaluate_command(run, checkpoint, split, beam_size, length_penalty, max_length, data_dir, max_images, batch_size,
                     json_output):
    """Score a trained model on a dataset split: BLEU-1..4, CIDEr-D, ROUGE-L and perplexity.

    RUN is a run directory written by `captionkit train` (its best checkpoint is used, or its latest when it has
    no best; see --checkpoint) or one checkpoint file.
    Each image gets one generated caption, scored against all its ground-truth captions with corpus-level metrics
    computed as the COCO caption evaluation toolkit does (higher is better). Every captionkit command, log and
    file gives CIDEr-D on that toolkit's scale (papers often print it x100). Perplexity is per word of the
    ground-truth captions under the model (lower is better; guessing uniformly scores the vocabulary size).

    \b
    Examples:
      captionkit evaluate runs/rnn-20260101-120000
      captionkit evaluate runs/rnn-20260101-120000 --beam 3 --max-images 500
      captionkit evaluate runs/rnn-20260101-120000 --checkpoint latest
      captionkit evaluate runs/rnn-20260101-120000 --json > val-scores.json
    """
    model, info, data = _load(run, checkpoint, data_dir)
    result = evaluate(model, data, split, beam_size=beam_size, max_images=max_images, batch_size=batch_size,
                      max_length=max_length, length_penalty=length_penalty, progress=_progress())
    if json_output:
        click.echo(json.dumps({"checkpoint": str(info["checkpoint"]), "iteration": info["iteration"], **result},
                              indent=2))
        return
    click.echo(f"{info['checkpoint']} (iteration {info['iteration']}) on {split}: {result['images']} images, "
               f"{_describe_decoding(beam_size, length_penalty)}, at most {result['max_length']} words")
    for name in _METRICS:
        click.echo(f"  {name:16}{result[name]:9.4f}")
    click.echo(f"  {'perplexity':16}{result['perplexity']:9.4f}   per word, over the {result['tokens']} words of the "
               f"{result['captions']} ground-truth captions")
