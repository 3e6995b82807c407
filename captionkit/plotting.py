"""The pictures a training run leaves behind: loss curves and a grid of images with their captions.

Figures are drawn with matplotlib's object API onto the Agg canvas (no pyplot, no display, no global backend
switch), so this works headless and never disturbs a notebook's own matplotlib settings. Files are replaced
atomically. matplotlib is imported on first use only.
"""
import textwrap

import numpy as np

from captionkit.atomicfile import atomic_write

__all__ = ["attention_overlay", "plot_attention_maps", "plot_caption_grid", "plot_comparison", "plot_training_curves"]

_CURVES = ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D")
# Scores that lie in [0, 1] by definition (CIDEr-D runs up to 10, losses and perplexity have no top).
_BOUNDED_BY_ONE = frozenset({"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"})
# The caption grid's layout, in inches: each picture is _GRID_PICTURE wide, its title lines above it, and cells are
# _GRID_GAP apart, with _GRID_GAP of margin around the whole.
_GRID_PICTURE = 3.0
_GRID_GAP = 0.15
_GRID_TITLE_POINTS = 7.5
_GRID_LINE = _GRID_TITLE_POINTS * 1.25 / 72  # a title line at matplotlib's spacing (1.2) and a little more
_GRID_TITLE_PAD = 4 / 72  # between a title and its picture


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    with atomic_write(path) as f:
        figure.savefig(f, format="png")


def _moving_average(values, window):
    if len(values) < window:
        return None
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def _loss_axes(axes, title):
    # Losses fall by an order of magnitude in the first iterations: on a log scale the tail stays readable.
    from matplotlib.ticker import FormatStrFormatter

    axes.set_yscale("log")
    for axis_formatter in (axes.yaxis.set_major_formatter, axes.yaxis.set_minor_formatter):
        axis_formatter(FormatStrFormatter("%g"))  # plain numbers (5, 10, 20), not powers of ten
    axes.set_xlabel("Iteration")
    axes.set_ylabel("Loss per caption (log scale)")
    axes.set_title(title)
    axes.grid(alpha=0.3, which="both")


def _score_axis(axes, bounded):
    """Plain tick labels on a score axis from 0: matplotlib would otherwise label scores that barely move (BLEU at
    0.9999999999) with an offset such as ``1e-10+9.99999999e-1``; a score bounded by 1 shows all of [0, 1], so
    runs and iterations read on one scale."""
    from matplotlib.ticker import ScalarFormatter

    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axes.yaxis.set_major_formatter(formatter)
    if bounded:
        axes.set_ylim(0, 1)
    else:
        axes.set_ylim(bottom=0)


def _legend_below(axes, handles=None):
    """A legend under the axes, clear of the curves."""
    kwargs = {"handles": handles} if handles is not None else {}
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8, frameon=False, **kwargs)


def _smoothed(iterations, losses):
    window = max(1, len(losses) // 50)
    if window == 1:
        return iterations, losses, 1
    return iterations[window - 1:], _moving_average(losses, window), window


def plot_training_curves(records, path):
    """Draw the losses (left: training minibatches and their running mean, validation) and the validation scores
    (right) against iterations into the PNG ``path``.

    ``records``: the dicts of ``metrics.jsonl`` (``kind`` "train" with ``loss``, ``kind`` "val" with scores and
    ``loss``). CIDEr-D is on the COCO toolkit's scale and gets its own axis. Returns the Figure drawn.
    """
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    figure = _figure(11, 4.6)
    loss_axes, val_axes = figure.subplots(1, 2)

    if train:
        iterations = np.array([r["iteration"] for r in train])
        losses = np.array([r["loss"] for r in train], dtype=float)
        loss_axes.plot(iterations, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="minibatch loss")
        x, smooth, window = _smoothed(iterations, losses)
        if window > 1:
            loss_axes.plot(x, smooth, color="tab:blue", linewidth=1.6, label=f"mean of {window}")
    val_loss = [r for r in val if "loss" in r]
    if val_loss:
        loss_axes.plot([r["iteration"] for r in val_loss], [r["loss"] for r in val_loss], color="tab:red",
                       marker="o", markersize=3, label="validation loss")
    _loss_axes(loss_axes, "Loss")
    if train or val_loss:
        _legend_below(loss_axes)

    if val:
        iterations = [r["iteration"] for r in val]
        # CIDEr-D runs up to 10, the others up to 1: it gets its own axis on the right.
        cider_axes = val_axes.twinx()
        lines = []
        for name, color in zip(_CURVES, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
            if all(name in r for r in val):
                axes = cider_axes if name == "CIDEr-D" else val_axes
                lines += axes.plot(iterations, [r[name] for r in val], marker="o", markersize=3, color=color,
                                   label=name)
        cider_axes.set_ylabel("CIDEr-D")
        _score_axis(cider_axes, bounded=False)
        _legend_below(val_axes, lines)
    else:
        val_axes.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=val_axes.transAxes)
    val_axes.set_xlabel("Iteration")
    val_axes.set_ylabel("BLEU, ROUGE-L")
    _score_axis(val_axes, bounded=True)
    val_axes.set_title("Validation (greedy captions)")
    val_axes.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    return figure


def plot_comparison(reports, metric, path):
    """Overlay runs (:class:`captionkit.comparison.RunReport`): training loss (running mean) and validation loss
    (left), the validation ``metric`` (right), one colour per run, into the PNG ``path``; returns the Figure. The
    training loss of a self-critical run (``objective`` "scst") is left out, and the loss panel's title says so."""
    figure = _figure(11, 4.8)
    loss_axes, metric_axes = figure.subplots(1, 2)
    colours = [f"C{k % 10}" for k in range(len(reports))]
    # A self-critical run's training loss is the advantage-weighted log-likelihood of its samples: no cross-entropy
    # per caption, negative whenever the samples beat the baseline, so a log axis of cross-entropies cannot hold it.
    # Its validation loss is a cross-entropy and is drawn; the figure names the curves it leaves out.
    self_critical = [report.name for report in reports if report.train and report.config.get("objective") == "scst"]
    for report, colour in zip(reports, colours):
        if report.train and report.name not in self_critical:
            iterations, losses = (np.array(v, dtype=float) for v in zip(*report.train))
            x, smooth, _ = _smoothed(iterations, losses)
            loss_axes.plot(x, smooth, color=colour, linewidth=1.4, label=f"{report.name} train")
        val = [r for r in report.val if "loss" in r]
        if val:
            loss_axes.plot([r["iteration"] for r in val], [r["loss"] for r in val], color=colour, linestyle="--",
                           marker="o", markersize=3, label=f"{report.name} val")
        scored = [r for r in report.val if metric in r]
        if scored:
            metric_axes.plot([r["iteration"] for r in scored], [r[metric] for r in scored], color=colour,
                             marker="o", markersize=3, label=report.name)
    title = "Loss (solid: training, running mean; dashed: validation)"
    if self_critical:
        title += (f"\nnot drawn: the SCST training loss of {', '.join(self_critical)}"
                  "\n(reward-weighted, not a cross-entropy, often negative)")
    _loss_axes(loss_axes, title)
    _legend_below(loss_axes)
    metric_axes.set_xlabel("Iteration")
    metric_axes.set_ylabel(metric)
    _score_axis(metric_axes, bounded=metric in _BOUNDED_BY_ONE)
    metric_axes.set_title(f"Validation {metric}")
    metric_axes.grid(alpha=0.3)
    _legend_below(metric_axes)
    figure.tight_layout()
    _save(figure, path)
    return figure


def _wrap(text, width=40):
    return "\n".join(textwrap.wrap(text, width)) or "(empty)"


def _shortened(name, width=48):
    """``name`` on one line (its whitespace runs, newlines included, as one space), cut in the middle to ``width``
    characters: both the start and the suffix of a file name tell it apart."""
    name = " ".join(str(name).split())
    if len(name) <= width:
        return name
    keep = width - 1
    return f"{name[:keep - keep // 2]}\u2026{name[-(keep // 2):]}"


def plot_caption_grid(images, generated, references, path, columns=4, names=None):
    """Draw each image ((H, W, 3) uint8, sizes may differ) with its generated caption and, unless ``references``
    is None, one ground-truth caption above it, and each of ``names`` (e.g. the pictures' file names, if given)
    under it, into the PNG ``path``; returns the Figure."""
    count = len(images)
    if (count != len(generated) or (references is not None and count != len(references))
            or (names is not None and count != len(names))):
        raise ValueError(
            f"need one caption (and one reference and one name, if any) per image, got {count} images, "
            f"{len(generated)} captions, {'no' if references is None else len(references)} references and "
            f"{'no' if names is None else len(names)} names"
        )
    titles = [_wrap(caption) if references is None else f"{_wrap(caption)}\nGT: {_wrap(references[k])}"
              for k, caption in enumerate(generated)]
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    # Cells are placed by hand, as tall as the tallest picture (capped at 1.5 times its width) under the longest
    # title: a fixed height per row (and tight_layout's uniform spacing) left wide empty bands between the rows.
    picture_height = _GRID_PICTURE * min(1.5, max((image.shape[0] / image.shape[1] for image in images), default=1))
    title_height = max((title.count("\n") + 1 for title in titles), default=1) * _GRID_LINE + _GRID_TITLE_PAD
    name_height = 0.0 if names is None else _GRID_TITLE_PAD + _GRID_LINE
    cell_width = _GRID_PICTURE + _GRID_GAP
    cell_height = title_height + picture_height + name_height + _GRID_GAP
    width, height = columns * cell_width + _GRID_GAP, rows * cell_height + _GRID_GAP
    figure = _figure(width, height)
    for k, (image, title) in enumerate(zip(images, titles)):
        row, column = divmod(k, columns)
        left = _GRID_GAP + column * cell_width
        bottom = height - _GRID_GAP - row * cell_height - title_height - picture_height
        ax = figure.add_axes((left / width, bottom / height, _GRID_PICTURE / width, picture_height / height))
        ax.axis("off")
        ax.imshow(image, interpolation="nearest" if max(image.shape[:2]) <= 128 else "antialiased")
        ax.set_title(title, fontsize=_GRID_TITLE_POINTS, loc="left", pad=_GRID_TITLE_PAD * 72)
        if names is not None:
            # parse_math off: a file name with two dollar signs is a name, not a formula
            figure.text(left / width, (bottom - _GRID_TITLE_PAD) / height, _shortened(names[k]), ha="left",
                        va="top", fontsize=_GRID_TITLE_POINTS, color="0.3", parse_math=False)
    _save(figure, path)
    return figure


def attention_overlay(picture, weights, grid):
    """The picture ((H, W, 3) uint8) lit where the model looked: ``weights`` (L,) over a ``grid`` (rows, columns)
    of regions, rows first (L = rows * columns), upsampled smoothly (bicubic) to the picture's size and scaled to
    its largest value; each pixel keeps 25% of its brightness plus 75% times the attention there -> (H, W, 3)
    uint8."""
    from PIL import Image

    rows, columns = grid
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (rows * columns,):
        raise ValueError(f"weights must have shape ({rows * columns},) for a {rows} x {columns} grid, got "
                         f"{weights.shape}")
    height, width = picture.shape[:2]
    smooth = Image.fromarray(weights.reshape(rows, columns), mode="F").resize((width, height), Image.BICUBIC)
    light = np.clip(np.asarray(smooth), 0.0, None)
    light /= max(float(light.max()), 1e-12)
    return (picture.astype(np.float32) * (0.25 + 0.75 * light[:, :, None])).round().astype(np.uint8)


def plot_attention_maps(picture, words, weights, grid, path, columns=5):
    """One panel per generated word: the picture under that word's attention (:func:`attention_overlay`), the
    word as its title. ``words`` (T,) strings, ``weights`` (T, L)."""
    if len(words) == 0 or len(words) != len(weights):
        raise ValueError(f"need one row of weights per word (and at least one word), got {len(words)} words and "
                         f"{len(weights)} rows of weights")
    columns = max(1, min(columns, len(words)))
    rows = -(-len(words) // columns)
    figure = _figure(2.4 * columns, 2.6 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.axis("off")
    for ax, word, row in zip(axes, words, weights):
        ax.imshow(attention_overlay(picture, row, grid))
        ax.set_title(word, fontsize=11)
    figure.tight_layout(pad=1.0)
    _save(figure, path)
