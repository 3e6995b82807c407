"""captionkit.comparison: run directories read into reports, named apart, and tabulated side by side.

Oracles: run directories written by hand here (config.json, summary.json, metrics.jsonl), so every expected value
is the one the test wrote.
"""
import pytest

from captionkit.comparison import SCORES, compare_runs, read_run, read_runs
from training_helpers import write_run

BASE = {"cell": "rnn", "hidden_dim": 12, "wordvec_dim": 8, "lr": 0.01, "data": "bundle", "monitor": "CIDEr-D"}


def val(iteration, **scores):
    return {"kind": "val", "iteration": iteration, **scores}


def test_a_report_holds_the_runs_records(tmp_path):
    records = [{"kind": "train", "iteration": 1, "loss": 3.0}, {"kind": "train", "iteration": 2, "loss": 2.5},
               val(2, **{"CIDEr-D": 0.4, "loss": 2.6}), {"kind": "checkpoint", "iteration": 2}]
    run = write_run(tmp_path / "rnn-0", BASE, {"iteration": 2}, records)
    report = read_run(run)
    assert report.name == "rnn-0" and report.config == BASE and report.summary == {"iteration": 2}
    assert report.train == [(1, 3.0), (2, 2.5)] and report.val == [records[2]]
    with pytest.raises(ValueError, match=r"not-a-run: not a run directory \(no config.json\)"):
        read_run(tmp_path / "not-a-run")


def test_the_best_is_the_summarys_or_recomputed_in_the_metrics_direction(tmp_path):
    records = [val(3, **{"CIDEr-D": 0.2, "loss": 2.0}), val(6, **{"CIDEr-D": 0.5, "loss": 2.4}),
               val(9, **{"CIDEr-D": 0.3, "loss": 1.9})]
    recorded = {"metric": "CIDEr-D", "value": 0.5, "iteration": 6}
    report = read_run(write_run(tmp_path / "a", BASE, {"best": recorded}, records))
    assert report.best("CIDEr-D") == recorded
    assert report.best("loss") == {"metric": "loss", "value": 1.9, "iteration": 9}  # lower is better
    older = read_run(write_run(tmp_path / "b", BASE, {}, records))  # a summary from before "best"
    assert older.best("CIDEr-D") == {"metric": "CIDEr-D", "value": 0.5, "iteration": 6}
    assert older.best("BLEU-4") is None  # never scored
    assert older.final() == {k: v for k, v in records[-1].items() if k != "kind"}  # a checked record


def test_names_grow_until_they_differ_and_a_run_given_twice_is_refused(tmp_path):
    first = write_run(tmp_path / "a" / "x" / "rnn-0", BASE, {}, [])
    second = write_run(tmp_path / "b" / "x" / "rnn-0", BASE, {}, [])
    other = write_run(tmp_path / "lstm-0", BASE, {}, [])
    assert [r.name for r in read_runs([first, second, other])] == ["a/x/rnn-0", "b/x/rnn-0", "lstm-0"]
    with pytest.raises(ValueError, match=r"the same run as .*rnn-0, given twice; name each run once"):
        read_runs([first, tmp_path / "a" / "x" / ".." / "x" / "rnn-0"])


def test_the_table_lists_what_differs_and_each_runs_results(tmp_path):
    summary = {"iteration": 12, "num_iterations": 12, "elapsed": 3.5, "val_metrics": {"CIDEr-D": 0.7, "BLEU-4": 0.1,
                                                                                      "BLEU-1": 0.5}}
    one = write_run(tmp_path / "one", BASE, summary, [val(12, **{"CIDEr-D": 0.7})])
    two = write_run(tmp_path / "two", {**BASE, "lr": 0.03, "data": "other", "cell": "gru"},
                    {"stopped_early": True, "interrupted": "SIGTERM"}, [val(6, **{"CIDEr-D": 0.9})])
    table = compare_runs(read_runs([one, two]))
    assert table["metric"] == "CIDEr-D" and table["differing"] == ["data", "lr"]  # the cell is a column of its own
    first, second = table["runs"]
    assert first["options"] == {"data": "bundle", "lr": 0.01} and second["cell"] == "gru"
    assert first["final"] == {"BLEU-4": 0.1, "CIDEr-D": 0.7}  # only the scores compare shows, in SCORES
    assert set(first["final"]) <= set(SCORES)
    assert (first["iteration"], first["num_iterations"], first["elapsed"]) == (12, 12, 3.5)
    assert second["best"] == {"metric": "CIDEr-D", "value": 0.9, "iteration": 6}
    assert (second["stopped_early"], second["interrupted"], first["stopped_early"]) == (True, "SIGTERM", False)
    assert compare_runs(read_runs([one, two]), "loss")["runs"][0]["best"] is None


def test_no_runs_or_an_unknown_metric_is_refused(tmp_path):
    with pytest.raises(ValueError, match="compare needs at least one run directory"):
        compare_runs([])
    run = write_run(tmp_path / "r", BASE, {}, [])
    with pytest.raises(ValueError, match=r"unknown metric 'BLEU-5'; one of CIDEr-D, BLEU-1"):
        compare_runs(read_runs([run]), "BLEU-5")
