"""`captionkit train --objective scst` from the outside: fine-tuning a run, the recorded objective, compare,
a bit-identical resume and the options' one-line refusals."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from captionkit import load_model
from captionkit.cli import main
from captionkit.runs import RunDirectory
from training_helpers import tiny_bundle

TINY_ARGS = ["--hidden-dim", "12", "--wordvec-dim", "8", "--batch-size", "8", "--eval-images", "6",
             "--num-samples", "3", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny bundle and a cross-entropy run on it."""
    root = tmp_path_factory.mktemp("scst")
    bundle = tiny_bundle(root / "bundle")
    result = invoke("train", "--data", bundle, "--out", root / "xe", "--epochs", "2", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    return bundle, root / "xe"


def scst_run(trained, out, *args):
    bundle, xe = trained
    return invoke("train", "--data", bundle, "--init-from", xe, "--objective", "scst", "--scst-samples", "3",
                  "--out", out, *TINY_ARGS, *args)


def test_scst_fine_tunes_a_run_records_its_objective_and_compares(trained, tmp_path):
    result = scst_run(trained, tmp_path / "scst", "--epochs", "1")
    assert result.exit_code == 0, result.output
    model, info = load_model(tmp_path / "scst")
    assert info["config"]["objective"] == "scst" and info["config"]["scst_samples"] == 3
    assert (RunDirectory(tmp_path / "scst").checkpoints / "best.npz").is_file()
    xe_model = load_model(trained[1])[0]
    assert any(not np.array_equal(model.params[n], xe_model.params[n]) for n in model.params)
    compared = invoke("compare", trained[1], tmp_path / "scst", "--json", "--plot", tmp_path / "compare.png")
    assert compared.exit_code == 0, compared.output
    assert "scst" in json.dumps(json.loads(compared.output)) and (tmp_path / "compare.png").is_file()


def test_resumed_scst_run_is_bit_identical(trained, tmp_path):
    assert scst_run(trained, tmp_path / "whole", "--epochs", "2").exit_code == 0
    assert scst_run(trained, tmp_path / "parts", "--epochs", "1").exit_code == 0
    resumed = invoke("train", "--resume", tmp_path / "parts", "--epochs", "2", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    whole, parts = load_model(tmp_path / "whole")[0], load_model(tmp_path / "parts")[0]
    for name, value in whole.params.items():
        assert np.array_equal(parts.params[name], value), name


@pytest.mark.parametrize("args, message", [
    (["--scst-samples", "0"], "--scst-samples"),
    (["--scst-baseline", "beam"], "--scst-baseline"),
    (["--scst-baseline", "mean", "--scst-samples", "1"], "--scst-baseline mean needs --scst-samples of at least 2"),
])
def test_bad_scst_options_are_refused_with_one_line(trained, tmp_path, args, message):
    bundle, xe = trained
    result = invoke("train", "--data", bundle, "--init-from", xe, "--objective", "scst", "--out", tmp_path / "x",
                    *TINY_ARGS, *args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
