"""captionkit.undertraining: a run planned with fewer than MIN_ITERATIONS updates is named before it starts, with a
batch size and epochs that reach them.

The oracle for the suggestion is the solver's own count of an epoch (``max(captions // batch_size, 1)`` updates,
CaptioningSolver.iterations_per_epoch); the event is checked on real `captionkit.train` runs of the tiny bundle.
"""
import io

import pytest

from captionkit import train
from captionkit.progress import ProgressDisplay
from captionkit.undertraining import MIN_ITERATIONS, short_run
from training_helpers import TINY, tiny_bundle


def updates(captions, batch_size, epochs):
    return max(captions // batch_size, 1) * epochs


def test_the_boundary_is_min_iterations():
    assert MIN_ITERATIONS == 200
    assert short_run(200, 20000, 100) is None and short_run(4000, 40000, 100) is None
    assert short_run(199, 19900, 100)["num_iterations"] == 199


def test_the_readme_recipe_on_225_captions_is_named_with_the_fix():
    hint = short_run(updates(225, 100, 10), 225, 100)
    assert (hint["num_iterations"], hint["needed"], hint["captions"]) == (20, 200, 225)
    assert (hint["batch_size"], hint["epochs"]) == (22, 20)
    assert hint["message"] == (
        "Only 20 iterations planned (225 training captions at batch size 100): too few to learn much; on the "
        "built-in dataset the validation loss needs about 200 to fall clearly. For 200, train with --batch-size 22 "
        "--epochs 20 (docs/own-data.md, \"Small datasets\").")


@pytest.mark.parametrize("captions, batch_size, epochs", [(225, 100, 10), (48, 8, 2), (5, 100, 10), (1, 1, 1),
                                                         (1990, 100, 9), (300, 10, 3), (999, 64, 1)])
def test_the_suggestion_reaches_the_minimum_with_no_epoch_to_spare(captions, batch_size, epochs):
    hint = short_run(updates(captions, batch_size, epochs), captions, batch_size)
    batch, suggested = hint["batch_size"], hint["epochs"]
    assert 1 <= batch <= batch_size  # never a larger batch: that would mean fewer updates per epoch
    assert updates(captions, batch, suggested) >= MIN_ITERATIONS > updates(captions, batch, suggested - 1)
    assert f"--batch-size {batch} --epochs {suggested}" in hint["message"]


def test_a_batch_size_that_already_cuts_the_data_finely_is_kept():
    assert short_run(updates(300, 10, 3), 300, 10)["batch_size"] == 10  # 30 updates an epoch: only epochs are short


def events_of(tmp_path, **options):
    events = []
    train(dict(TINY, data=str(tiny_bundle(tmp_path / "bundle")), **options), out=tmp_path / "run",
          callback=events.append, progress=False)
    return events


def test_train_sends_the_hint_before_its_first_iteration(tmp_path):
    events = events_of(tmp_path)  # 48 captions at batch size 8: 6 updates an epoch, 12 in all
    names = [event["event"] for event in events]
    assert names.index("short_run") == names.index("start") + 1 < names.index("iteration")
    hint = events[names.index("short_run")]
    assert (hint["num_iterations"], hint["captions"], hint["batch_size"], hint["epochs"]) == (12, 48, 4, 17)


def test_a_run_of_the_minimum_gets_no_hint(tmp_path):
    events = events_of(tmp_path, epochs=34, eval_every=0, num_samples=0)  # 34 epochs of 6 updates: 204
    assert [e["num_iterations"] for e in events if e["event"] == "start"] == [204]
    assert "short_run" not in [event["event"] for event in events]


def test_a_run_from_trained_weights_gets_no_hint(tmp_path):
    first = events_of(tmp_path / "first")
    assert "short_run" in [event["event"] for event in first]
    again = events_of(tmp_path / "again", init_from=str(tmp_path / "first" / "run"))  # as short, but fine-tuning
    assert "start" in [event["event"] for event in again] and "short_run" not in [e["event"] for e in again]


def test_the_progress_display_prints_it_as_a_note():
    stream = io.StringIO()
    ProgressDisplay(stream)({"event": "short_run", "message": "Only 20 iterations planned."})
    assert stream.getvalue() == "Note: Only 20 iterations planned.\n"
