"""`captionkit sample` and `captionkit evaluate`: what a trained model says about images, and how well."""
import json
import math
import secrets
import sys

import click
import numpy as np

from captionkit.loading import load_model
from captionkit.cli.checkpoints import checkpoint_option, say_checkpoint
from captionkit.cli.params import FiniteFloat, precision_option
from captionkit.data import SPLITS, BundleError, load_coco_data
from captionkit.decoding import greedy_attention
from captionkit.evaluation import DEFAULT_BATCH_SIZE, evaluate, sample_captions
from captionkit.vocabulary import caption_words

_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L")
_STAGES = {"perplexity": "scoring ground-truth captions", "captions": "generating captions"}


def _decoding_options(command):
    """The options `sample` and `evaluate` share: which run, data and split, and how to decode."""
    options = [
        click.argument("run", type=click.Path(), metavar="RUN"),
        checkpoint_option,
        precision_option,
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


def _load(run, checkpoint, precision, data_dir):
    """The model of RUN's chosen checkpoint at ``precision`` (None: the run's), load_model's info, and the dataset
    the run was trained on (or ``data_dir``); once both are read, the checkpoint is named on stderr (a failure is
    its one line alone)."""
    model, info = load_model(run, checkpoint=checkpoint, precision=precision)
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


def _region_names(regions):
    """(a name for each of ``regions`` regions, how they are named): ``(row, col)`` of a square grid, regions being
    numbered row by row from the top left as every grid encoder numbers them; ``#index`` otherwise."""
    side = math.isqrt(regions)
    if side * side == regions:
        names = [f"({region // side}, {region % side})" for region in range(regions)]
        return names, f"a {side} x {side} grid, (row, col) from the top left"
    return [f"#{region}" for region in range(regions)], "numbered as the encoder gave them"


def _attended_samples(model, data, split, samples, max_length):
    """``samples`` (sample_captions' entries) decoded again greedily with the weights the model used: each entry's
    ``generated`` becomes the text of that decoding and it gains ``words`` and ``attention`` (len(words), L), so
    the words and the weights printed beside them come from one and the same decoding."""
    images = np.array([entry["image"] for entry in samples], dtype=np.int64)
    if max_length is None:  # sample_captions' default: the split's caption width without <START>
        max_length = data[f"{split}_captions"].shape[1] - 1
    ids, weights = greedy_attention(model, data[f"{split}_features"][images], max_length)
    for entry, row_ids, row_weights in zip(samples, ids, weights):
        read = caption_words(row_ids, model.idx_to_word)
        entry["words"] = [word for _, word in read]
        entry["generated"] = " ".join(entry["words"])
        entry["attention"] = row_weights[[t for t, _ in read]]
    return samples


def _echo_attention(entry, top, region_names):
    """One line per generated word: the ``top`` regions it looked at most, with their weights."""
    width = max((len(word) for word in entry["words"]), default=0)
    for word, weights in zip(entry["words"], entry["attention"]):
        order = np.argsort(-weights, kind="stable")[:top]
        looked = "   ".join(f"{region_names[region]:>8} {weights[region]:.2f}" for region in order)
        click.echo(f"      {word:<{width}}  {looked}")


@click.command("sample")
@_decoding_options
@click.option("--n", "num", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Number of images to caption (all of the split if it has fewer).")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=None, metavar="S",
              help="Seed that picks the images, to see the same ones again. Default: a fresh one, printed.")
@click.option("--json", "json_output", is_flag=True,
              help="Print a JSON list of {image, url, generated, references} instead of text (with "
                   "--attention-weights also words and attention: one list of L weights per word).")
@click.option("--temperature", type=FiniteFloat(above=True), default=None, metavar="T",
              help="Draw each word at random from the model's distribution sharpened (T < 1) or flattened (T > 1), "
                   "instead of decoding greedily. Default when --top-k is given: 1.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, metavar="K",
              help="Draw each word at random among the K most probable ones (with --temperature, or at 1).")
@click.option("--attention-weights", is_flag=True,
              help="For a model trained with --attention: under each caption, every word with the image regions "
                   "it looked at most before choosing it, as (row, col) of the grid from the top left and the "
                   "share of attention each got (a word's weights sum to 1 over all regions). Greedy decoding.")
@click.option("--top-regions", type=click.IntRange(min=1), default=3, show_default=True, metavar="K",
              help="With --attention-weights: how many of each word's most-attended regions to print.")
def sample(run, checkpoint, precision, split, beam_size, length_penalty, max_length, data_dir, num, seed, json_output,
           temperature, top_k, attention_weights, top_regions):
    """Caption N random images with a trained model and print them beside their ground-truth captions.

    RUN is a run directory written by `captionkit train` (its best checkpoint is used, or its latest when it has
    no best; see --checkpoint) or one checkpoint file (RUN/checkpoints/ckpt-*.npz). The dataset is the one the run
    was trained on; COCO images also show their URL.

    \b
    Examples:
      captionkit sample runs/rnn-20260101-120000
      captionkit sample runs/rnn-20260101-120000 --n 4 --beam 3 --seed 7
      captionkit sample runs/rnn-20260101-120000/checkpoints/ckpt-00000500.npz --split train
      captionkit sample runs/rnn-soft-20260101-120000 --attention-weights --n 2
    """
    random_words = temperature is not None or top_k is not None
    if random_words and beam_size != 1:
        raise click.UsageError("--temperature/--top-k draw words at random; --beam searches: use one or the other")
    if attention_weights and (random_words or beam_size != 1):
        raise click.UsageError("--attention-weights shows the weights of greedy decoding: leave out --beam, "
                               "--temperature and --top-k")
    model, info, data = _load(run, checkpoint, precision, data_dir)
    if attention_weights and model.spec.attention is None:
        raise click.ClickException(f"{info['checkpoint']}: the model ({model.spec.describe()}) has no attention, so "
                                   "no attention weights; train one with `captionkit train --attention soft` on a "
                                   "grid bundle (`captionkit data synth DIR --grid 4`)")
    if seed is None:
        seed = secrets.randbelow(2**32)
    samples = sample_captions(model, data, split, num=num, beam_size=beam_size, seed=seed, max_length=max_length,
                              length_penalty=length_penalty, temperature=temperature, top_k=top_k)
    if attention_weights:
        samples = _attended_samples(model, data, split, samples, max_length)
    if json_output:
        click.echo(json.dumps(samples, indent=2, default=np.ndarray.tolist))
        return
    decoding = (f"words drawn at temperature {1.0 if temperature is None else temperature:g}"
                + (f" among the {top_k} most probable" if top_k else "")) if random_words else \
        _describe_decoding(beam_size, length_penalty)
    click.echo(f"{info['checkpoint']} (iteration {info['iteration']}): {len(samples)} {split} images, {decoding}, "
               f"seed {seed}")
    if attention_weights:
        regions = model.spec.feature_shape[0]
        region_names, naming = _region_names(regions)
        click.echo(f"under each caption, each word's {min(top_regions, regions)} most-attended of {regions} regions "
                   f"({naming}) and its weight")
    for entry in samples:
        url = entry["url"] or ""
        click.echo(f"\n{split} image {entry['image']}" + (f"  {url}" if url.startswith(("http://", "https://"))
                                                            else ""))
        click.echo(f"  generated:    {entry['generated']}")
        if attention_weights:
            _echo_attention(entry, top_regions, region_names)
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
def evaluate_command(run, checkpoint, precision, split, beam_size, length_penalty, max_length, data_dir, max_images,
                     batch_size, json_output):
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
    model, info, data = _load(run, checkpoint, precision, data_dir)
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
