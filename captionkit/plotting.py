"""The pictures a training run leaves behind: loss curves and a grid of images with their captions.

Figures are drawn with matplotlib's object API onto the Agg canvas (no pyplot, no display, no global backend
switch), so this works headless and never disturbs a notebook's own matplotlib settings. Files are replaced
atomically. matplotlib is imported on first use only.
"""
import textwrap

import numpy as np

from captionkit.atomicfile import atomic_write

__all__ = ["plot_caption_grid", "plot_training_curves"]

_CURVES = ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D")


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


def plot_training_curves(records, path):
    """Draw training loss (left) and validation metrics (right) against iterations into the PNG ``path``.

    ``records``: the dicts of ``metrics.jsonl`` (``kind`` "train" with ``loss``, ``kind`` "val" with metric values).
    """
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    figure = _figure(11, 4)
    loss_axes, val_axes = figure.subplots(1, 2)

    if train:
        iterations = np.array([r["iteration"] for r in train])
        losses = np.array([r["loss"] for r in train], dtype=float)
        loss_axes.plot(iterations, losses, color="tab:blue", alpha=0.35, linewidth=0.8, label="minibatch loss")
        window = max(1, len(losses) // 50)
        smooth = _moving_average(losses, window) if window > 1 else None
        if smooth is not None:
            loss_axes.plot(iterations[window - 1:], smooth, color="tab:blue", linewidth=1.6,
                           label=f"mean of {window}")
        loss_axes.legend(loc="upper right")
    loss_axes.set_xlabel("Iteration")
    loss_axes.set_ylabel("Loss")
    loss_axes.set_title("Training loss")
    loss_axes.grid(alpha=0.3)

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
        val_axes.legend(handles=lines, loc="lower right")
    else:
        val_axes.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=val_axes.transAxes)
    val_axes.set_xlabel("Iteration")
    val_axes.set_ylabel("BLEU, ROUGE-L")
    val_axes.set_title("Validation (greedy captions)")
    val_axes.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)


def _wrap(text, width=40):
    return "\n".join(textwrap.wrap(text, width)) or "(empty)"


def plot_caption_grid(images, generated, references, path, columns=4):
    """Draw each image ((H, W, 3) uint8, sizes may differ) with its generated caption and, unless ``references``
    is None, one ground-truth caption under it."""
    count = len(images)
    if count != len(generated) or (references is not None and count != len(references)):
        raise ValueError(
            f"need one caption (and one reference, if any) per image, got {count} images, {len(generated)} captions "
            f"and {'no' if references is None else len(references)} references"
        )
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    figure = _figure(3.2 * columns, (3.6 if references is None else 4.2) * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.axis("off")
    for k, (ax, image, caption) in enumerate(zip(axes, images, generated)):
        ax.imshow(image, interpolation="nearest" if max(image.shape[:2]) <= 128 else "antialiased")
        title = _wrap(caption) if references is None else f"{_wrap(caption)}\nGT: {_wrap(references[k])}"
        ax.set_title(title, fontsize=7.5, loc="left")
    figure.tight_layout()
    _save(figure, path)
