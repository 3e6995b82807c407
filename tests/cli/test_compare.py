"""`captionkit compare`: runs side by side, differing options, best and final values, names told apart.

Oracles: each run's summary.json and validation records, and captionkit.comparison on the same runs."""
import json

from captionkit.comparison import compare_runs, read_run
from training_helpers import run_cli, val_records, write_run


def test_compare_tabulates_differences_best_and_final(tmp_path, three_runs):
    result = run_cli("compare", *three_runs, "--plot", tmp_path / "compare.png")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0].split()
    assert header[:6] == ["run", "cell", "hidden", "wordvec", "hidden_dim", "lr"]
    for k, run in enumerate(three_runs):
        row = next(line for line in lines if line.startswith(run.name))
        summary = json.loads((run / "summary.json").read_text())
        assert f"{summary['best']['value']:.4f}" in row and "finished" in row
        assert f"{summary['val_metrics']['CIDEr-D']:.3f}" in row
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    table = json.loads(run_cli("compare", *three_runs, "--json", "--no-plot").output)
    assert table["differing"] == ["hidden_dim", "lr"] and table["metric"] == "CIDEr-D"
    assert [row["options"]["lr"] for row in table["runs"]] == [1e-2, 1e-2, 3e-2]
    by_bleu = compare_runs([read_run(run) for run in three_runs], "BLEU-4")
    for row, run in zip(by_bleu["runs"], three_runs):
        assert row["best"]["value"] == max(r["BLEU-4"] for r in val_records(run))
    assert run_cli("compare", tmp_path).exit_code == 1  # not a run directory


def test_compare_names_runs_apart_and_refuses_one_run_twice(tmp_path, three_runs):
    import shutil

    for parent in ("a", "b"):
        shutil.copytree(three_runs[0], tmp_path / parent / "same-name")
    table = json.loads(run_cli("compare", tmp_path / "a" / "same-name", tmp_path / "b" / "same-name",
                               three_runs[1], "--json", "--no-plot").output)
    assert [row["run"] for row in table["runs"]] == ["a/same-name", "b/same-name", three_runs[1].name]
    result = run_cli("compare", three_runs[0], three_runs[0].parent / "." / three_runs[0].name, "--no-plot")
    assert result.exit_code == 1 and "given twice" in result.output and len(result.output.splitlines()) == 1


def test_the_table_shows_each_runs_numbers_and_how_it_ended(tmp_path):
    config = {"cell": "rnn", "hidden_dim": 12, "wordvec_dim": 8, "lr": 0.01, "monitor": "CIDEr-D"}
    records = [{"kind": "train", "iteration": 1, "loss": 3.0},
               {"kind": "val", "iteration": 6, "CIDEr-D": 0.25, "loss": 2.5, "perplexity": 4.0}]
    done = write_run(tmp_path / "done", config, {"iteration": 6, "num_iterations": 6, "elapsed": 65.0,
                                                 "val_metrics": {"CIDEr-D": 0.25, "loss": 2.5, "perplexity": 4.0}},
                     records)
    cut = write_run(tmp_path / "cut", {**config, "lr": 0.02}, {"iteration": 3, "num_iterations": 6,
                                                                "interrupted": "SIGINT"}, [])
    result = run_cli("compare", done, cut, "--no-plot")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["run", "cell", "hidden", "wordvec", "lr", "best", "CIDEr-D", "at", "BLEU-4", "CIDEr-D",
                              "ROUGE-L", "val", "loss", "perplexity", "iterations", "time", "ended"]
    assert rows[0].split() == ["done", "rnn", "12", "8", "0.01", "0.2500", "6", "-", "0.250", "-", "2.500", "4.000",
                               "6/6", "1:05", "finished"]
    assert rows[1].split() == ["cut", "rnn", "12", "8", "0.02", "-", "-", "-", "-", "-", "-", "-", "3/6", "-",
                               "interrupted", "(SIGINT)"]
    assert not (tmp_path / "compare.png").exists() and "Curves:" not in result.output
    by_loss = json.loads(run_cli("compare", done, cut, "--metric", "loss", "--no-plot", "--json").output)
    assert by_loss["metric"] == "loss" and by_loss["plot"] is None
    assert by_loss["runs"][0]["best"] == {"metric": "loss", "value": 2.5, "iteration": 6}
