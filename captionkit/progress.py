"""What a training run shows a person: :class:`ProgressDisplay` turns :func:`captionkit.train`'s events into lines.

On a terminal (or a notebook, whose output cell takes ``\\r``) the iteration line is redrawn in place: a bar,
iteration and epoch, loss, iterations per second, elapsed time and the time left; elsewhere (a log file) it is
printed every 5%. Validations, checkpoints, early stops and the end of the run are lines of their own. It writes to
stderr, so a command's results on stdout stay clean. Both ``captionkit train`` and :func:`captionkit.train` (by
default) use it; ``--json`` and ``callback=`` give the same events as data.
"""
import sys
import time

__all__ = ["ProgressDisplay", "format_duration", "format_scores"]

SCORES_SHOWN = ("BLEU-1", "BLEU-4", "CIDEr-D", "ROUGE-L", "loss", "perplexity")


def format_duration(seconds):
    """``m:ss`` or ``h:mm:ss``."""
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def format_scores(scores):
    """``BLEU-1 0.887  BLEU-4 0.584  CIDEr-D 3.004  ...`` of the scores present (CIDEr-D on the COCO toolkit's scale)."""
    return "  ".join(f"{name} {scores[name]:.3f}" for name in SCORES_SHOWN if name in scores)


def _is_interactive(stream):
    if "ipykernel" in sys.modules:  # a notebook: its output area redraws lines on \r
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ProgressDisplay:
    """A callable for :func:`captionkit.train`'s ``callback`` that writes the run's progress for people."""

    WIDTH = 24

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = _is_interactive(self.stream)
        self.last_percent = -1
        self.last_draw = 0.0
        self.line_open = False
        self.dataset_announced = False

    def _line(self, text):
        if self.line_open:
            self.stream.write("\n")
            self.line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event):
        handler = getattr(self, "_on_" + event["event"].replace(" ", "_"), None)
        if handler is not None:
            handler(event)

    def _on_dataset(self, event):
        if not self.dataset_announced:
            self._line("Building the built-in dataset (first use only; it is cached for later runs)...")
            self.dataset_announced = True
        if event["done"] == event["total"]:
            self._line(f"  {event['stage']}: {event['total']}/{event['total']}")

    def _on_short_run(self, event):
        self._line(f"Note: {event['message']}")

    def _on_start(self, event):
        config = event["config"]
        resumed = f", resumed from {event['resumed_from']}" if event["resumed_from"] else ""
        initialised = f", starting from the weights of {config['init_from']}" if config.get("init_from") else ""
        products = "" if config.get("precision", "fp32") == "fp32" else f", products at {config['precision']}"
        self._line(f"Training the {config['cell']} cell (hidden {config['hidden_dim']}, word vectors "
                   f"{config['wordvec_dim']}{products}) for {event['num_iterations']} iterations "
                   f"({event['iterations_per_epoch']} "
                   f"per epoch){resumed}{initialised}.")
        self._line(f"Run directory: {event['run_dir']}")

    def _on_iteration(self, event):
        it, total = event["iteration"], event["num_iterations"]
        percent = 100 * it // total
        rate = f"{event['iterations_per_second']:.0f} it/s" if event["iterations_per_second"] >= 10 else \
            f"{event['iterations_per_second']:.1f} it/s"
        timing = f"{rate}  {format_duration(event['elapsed'])} elapsed  ETA {format_duration(event['eta'])}"
        if self.interactive:
            now = time.monotonic()
            if it != total and now - self.last_draw < 0.1:
                return
            filled = self.WIDTH * it // total
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            epoch = event["epoch"] + 1 if it < total else event["epoch"]
            self.stream.write(f"\r  [{bar}] {it}/{total}  epoch {epoch}  loss {event['loss']:.3f}  {timing}   ")
            self.stream.flush()
            self.line_open = True
            self.last_draw = now
        elif percent // 5 > self.last_percent // 5 or it == total:
            self._line(f"  iteration {it}/{total}  loss {event['loss']:.3f}  {timing}")
        self.last_percent = percent

    def _on_eval(self, event):
        best = "  (best so far)" if event.get("best") else ""
        self._line(f"  val @ iteration {event['iteration']} ({event['images']} images, {event['seconds']:.1f} s): "
                   f"{format_scores(event['metrics'])}{best}")

    def _on_checkpoint(self, event):
        if not self.interactive:
            self._line(f"  checkpoint @ iteration {event['iteration']} ({event['seconds']:.2f} s): {event['path']}")

    def _on_early_stop(self, event):
        self._line(f"Stopped early at iteration {event['iteration']}: {event['monitor']} has not improved for "
                   f"{event['validations']} validations (best {event['best']:.4f} at iteration "
                   f"{event['best_iteration']}).")

    def _on_sample_skipped(self, event):
        self._line(f"  samples.png: val image {event['image']} left out ({event['url']}: {event['reason']})")

    def _on_already_done(self, event):
        self._line(f"{event['run_dir']} is finished at iteration {event['iteration']}: {event['reason']}. "
                   "Nothing was changed.")

    def _on_done(self, event):
        if self.line_open:
            self._line("")
        self._line(f"Trained {event['iteration']} of {event['num_iterations']} iterations; "
                   f"{format_duration(event['elapsed'])} in all; final loss {event['final_loss']:.3f}.")
        if event["val_metrics"]:
            self._line(f"Validation ({event['val_images']} images, greedy): {format_scores(event['val_metrics'])}")
        best = event.get("best")
        if best:
            self._line(f"Best {best['metric']}: {best['value']:.4f} at iteration {best['iteration']} "
                       f"({event['best_checkpoint']})")
        self._line(f"Checkpoint: {event['checkpoint']}")
