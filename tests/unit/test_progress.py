"""captionkit.progress: the events a run reports (rate, elapsed time, ETA) and ProgressDisplay's lines, including
that the Python API shows them by default.

Oracles: the events' own fields, a slowed iteration planted by the test, and the text written to a stream."""
import re
import subprocess
import sys

import pytest

from captionkit import train
from captionkit.progress import ProgressDisplay
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
