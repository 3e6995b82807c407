"""captionkit.progress: the events a run reports (rate, elapsed time, ETA) and ProgressDisplay's lines, including
that the Python API shows them by default.

Oracles: the events' own fields, a slowed iteration planted by the test, and the text written to a stream."""
import re
import subprocess
import sys

import pytest

from captionkit import train
from captionkit.progress import ProgressDisplay, format_duration, format_scores
from conftest import TESTS_DIR
from training_helpers import TINY


class _Stream:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return False


def test_progress_shows_rate_elapsed_eta_and_survives_a_stall(tmp_path, learnable, monkeypatch):
    events = []
    import time as time_module

    import captionkit.solver as solver_module

    original = solver_module.CaptioningSolver._step
    calls = {"n": 0}

    def step_with_a_stall(self):
        calls["n"] += 1
        if calls["n"] == 5:
            time_module.sleep(0.5)  # one slow iteration, as a shared machine gives
        return original(self)

    monkeypatch.setattr(solver_module.CaptioningSolver, "_step", step_with_a_stall)
    display_stream = _Stream()
    display = ProgressDisplay(display_stream)
    train(data=str(learnable), out=tmp_path / "run", progress=False, handle_signals=False,
          callback=lambda e: (events.append(e), display(e)), **TINY)
    iterations = [e for e in events if e["event"] == "iteration"]
    assert all(e["iterations_per_second"] > 0 and e["elapsed"] >= 0 for e in iterations)
    # The median of recent iterations: the stall does not make the rate collapse or the ETA jump.
    after = iterations[5]
    assert after["iterations_per_second"] > 10 and after["eta"] < 0.5
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and all(e["seconds"] >= 0 for e in evals)
    assert all("seconds" in e for e in events if e["event"] == "checkpoint")
    assert re.search(r"iteration 12/12 .* it/s  0:0\d elapsed  ETA 0:00", display_stream.text)
    assert "val @ iteration 6 (6 images, " in display_stream.text


@pytest.mark.slow
def test_the_python_api_shows_progress_by_default(tmp_path, learnable):
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r})\n"
            "from training_helpers import TINY\nfrom captionkit import train\n"
            f"train(data={str(learnable)!r}, out={str(tmp_path / 'a')!r}, **TINY)\n"
            f"train(data={str(learnable)!r}, out={str(tmp_path / 'b')!r}, progress=False, **TINY)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Training the rnn cell") == 1 and "iteration 12/12" in done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------------------------------------- the display itself
def test_durations_and_scores_are_formatted_for_people():
    assert [format_duration(s) for s in (0, 59.4, 59.6, 61, 3599, 3600, 3725, -3)] == \
        ["0:00", "0:59", "1:00", "1:01", "59:59", "1:00:00", "1:02:05", "0:00"]
    scores = {"CIDEr-D": 1.23456, "BLEU-1": 0.5, "loss": 2.0, "BLEU-2": 0.4}
    assert format_scores(scores) == "BLEU-1 0.500  CIDEr-D 1.235  loss 2.000"  # SCORES_SHOWN's order, not BLEU-2


def iteration(it, total=100, rate=50.0):
    return {"event": "iteration", "iteration": it, "num_iterations": total, "epoch": 0, "loss": 1.0 / it,
            "iterations_per_second": rate, "elapsed": it / rate, "eta": (total - it) / rate}


def test_a_stream_that_is_not_a_terminal_gets_the_first_iteration_and_a_line_every_five_percent():
    stream = _Stream()
    display = ProgressDisplay(stream)
    assert not display.interactive
    for it in range(1, 101):
        display(iteration(it, rate=5.0 if it == 100 else 50.0))
    lines = stream.text.splitlines()
    assert [int(re.search(r"iteration (\d+)/100", line).group(1)) for line in lines] == [1, *range(5, 101, 5)]
    assert lines[1] == "  iteration 5/100  loss 0.200  50 it/s  0:00 elapsed  ETA 0:02"
    assert lines[-1].endswith("5.0 it/s  0:20 elapsed  ETA 0:00")  # one decimal below 10 it/s
    display({"event": "no such event"})  # events the display does not show are ignored
    assert stream.text.count("\n") == 21


def test_a_terminal_gets_one_redrawn_bar_closed_before_the_next_line():
    class Terminal(_Stream):
        def isatty(self):
            return True

    stream = Terminal()
    display = ProgressDisplay(stream)
    display(iteration(50))
    display(iteration(51))  # within 0.1 s of the last draw: not redrawn
    assert stream.text.count("\r") == 1 and "[############------------] 50/100  epoch 1  loss 0.020" in stream.text
    display({"event": "checkpoint", "iteration": 50, "seconds": 0.1, "path": "x.npz"})  # not shown on a terminal
    display({"event": "eval", "iteration": 50, "images": 6, "seconds": 0.25, "metrics": {"BLEU-1": 0.25},
             "best": True})
    assert stream.text.endswith("   \n  val @ iteration 50 (6 images, 0.2 s): BLEU-1 0.250  (best so far)\n")


def test_the_end_of_a_run_and_an_early_stop_are_reported():
    stream = _Stream()
    display = ProgressDisplay(stream)
    display({"event": "early stop", "iteration": 30, "monitor": "CIDEr-D", "validations": 3, "best": 0.51234,
             "best_iteration": 12})
    display({"event": "done", "iteration": 30, "num_iterations": 60, "elapsed": 75, "final_loss": 1.5,
             "val_metrics": {"CIDEr-D": 0.5}, "val_images": 8, "checkpoint": "c.npz",
             "best": {"metric": "CIDEr-D", "value": 0.51234, "iteration": 12}, "best_checkpoint": "best.npz"})
    assert stream.text.splitlines() == [
        "Stopped early at iteration 30: CIDEr-D has not improved for 3 validations (best 0.5123 at iteration 12).",
        "Trained 30 of 60 iterations; 1:15 in all; final loss 1.500.",
        "Validation (8 images, greedy): CIDEr-D 0.500",
        "Best CIDEr-D: 0.5123 at iteration 12 (best.npz)",
        "Checkpoint: c.npz"]
