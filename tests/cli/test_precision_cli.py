"""`--precision` on `captionkit train`, `sample`, `evaluate` and `caption`: a bf16 run is recorded as one, resumed as
one and decoded as one unless a command asks otherwise; what cannot run at bf16 is refused in one line saying why.

Oracles: the run's own files (config.json, summary.json, the checkpoint's meta read by its parser), the model's
numbers at each precision compared with each other (a bf16 run's losses are not the fp32 run's, and the default
decoding of a bf16 run is the explicit bf16 one), and the messages captionkit promises.
"""
import json

import numpy as np
import pytest

from captionkit import kernels
from captionkit.cells import available_cells
from captionkit.checkpoint_schema import CheckpointError, read_checkpoint
from captionkit.loading import load_model
from captionkit.runs import RunDirectory
from training_helpers import run_cli, tiny_bundle

TINY_ARGS = ["--hidden-dim", "12", "--wordvec-dim", "8", "--batch-size", "8", "--eval-images", "4",
             "--num-samples", "2", "--backend", "numpy"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """(bundle, pictures folder): shapes pictures imported through the shapes encoder, so that runs can caption."""
    root = tmp_path_factory.mktemp("precision")
    for step in [("data", "synth", root / "pictures", "--pictures", "--num-train", 24, "--num-val", 6),
                 ("data", "import", root / "bundle", "--karpathy", root / "pictures" / "dataset_shapes.json",
                  "--images", root / "pictures" / "images", "--encoder", "shapes")]:
        result = run_cli(*step)
        assert result.exit_code == 0, result.output
    return root / "bundle", root / "pictures" / "images"


def _train(out, data, *args):
    result = run_cli("train", "--data", data, "--out", out, *TINY_ARGS, *args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def bf16_run(shapes, tmp_path_factory):
    """A run trained 2 epochs at bf16 (the numpy emulation, which every CPU runs), and its output."""
    out = tmp_path_factory.mktemp("runs") / "bf16"
    return out, _train(out, shapes[0], "--epochs", "2", "--precision", "bf16")


@pytest.fixture
def numpy_backend(monkeypatch):
    """Decoding commands on the numpy backend, so that they run the bf16 emulation on any CPU."""
    monkeypatch.setenv("CAPTIONKIT_BACKEND", "numpy")


def test_help_of_every_command_offers_precision():
    for command in ("train", "sample", "evaluate", "caption"):
        result = run_cli(command, "--help")
        assert result.exit_code == 0 and "--precision [fp32|bf16]" in result.output, command
    assert "AVX512-BF16" in run_cli("train", "--help").output
    assert "Default: the precision RUN was trained at" in " ".join(run_cli("sample", "--help").output.split())


def test_a_bf16_run_records_its_precision_everywhere(bf16_run):
    out, result = bf16_run
    assert f"Run saved in {out} (matrix products at precision bf16)" in result.output
    run = RunDirectory(out)
    assert run.read_json(run.config)["precision"] == "bf16"
    assert run.read_json(run.summary)["precision"] == "bf16"
    assert read_checkpoint(run.latest_checkpoint()).precision == "bf16"
    model, info = load_model(out, backend="numpy")
    assert model.precision == info["precision"] == "bf16"


def test_bf16_trains_other_numbers_than_fp32_from_the_same_start(bf16_run, shapes, tmp_path):
    fp32 = tmp_path / "fp32"
    _train(fp32, shapes[0], "--epochs", "2")
    assert RunDirectory(fp32).read_json(RunDirectory(fp32).summary)["precision"] == "fp32"
    bf16_losses = read_checkpoint(RunDirectory(bf16_run[0]).latest_checkpoint()).training["loss_history"]
    fp32_losses = read_checkpoint(RunDirectory(fp32).latest_checkpoint()).training["loss_history"]
    difference = np.abs(np.subtract(bf16_losses, fp32_losses)) / np.abs(fp32_losses)
    # The same parameters and minibatches: the first losses differ only by bf16's rounding of the products
    # (relative 2**-8 per input), not at all if the precision were ignored.
    assert 0 < difference[0] < 1e-2 and difference.max() > 0


def test_resume_keeps_bf16_and_ends_as_a_run_straight_through(shapes, bf16_run, tmp_path):
    half = tmp_path / "half"
    _train(half, shapes[0], "--epochs", "1", "--precision", "bf16")
    result = run_cli("train", "--resume", half, "--epochs", "2")  # no --precision: the run's is kept
    assert result.exit_code == 0, result.output
    resumed = read_checkpoint(RunDirectory(half).latest_checkpoint())
    straight = read_checkpoint(RunDirectory(bf16_run[0]).latest_checkpoint())
    assert resumed.precision == "bf16" and resumed.config["precision"] == "bf16"
    assert resumed.iteration == straight.iteration
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value, err_msg=name)


def test_resume_with_another_precision_is_refused(bf16_run):
    out, _ = bf16_run
    result = run_cli("train", "--resume", out, "--epochs", "3", "--precision", "fp32")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "the checkpoint was made with precision='bf16', but precision='fp32' was asked for" in result.output


def _rewrite_meta(path, change):
    """The checkpoint at ``path`` rewritten with its JSON meta changed by ``change(meta)``, the arrays kept."""
    with np.load(path) as archive:
        members = {key: archive[key] for key in archive.files}
    meta = json.loads(members["meta"].tobytes())
    change(meta)
    members["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)


def test_a_checkpoint_from_before_precision_reads_and_resumes_as_fp32(shapes, tmp_path):
    old = tmp_path / "old"
    _train(old, shapes[0], "--epochs", "1")
    latest = RunDirectory(old).latest_checkpoint()

    def forget_precision(meta):  # what captionkit wrote before the option existed
        del meta["precision"], meta["config"]["precision"]

    _rewrite_meta(latest, forget_precision)
    assert "precision" not in json.loads(np.load(latest)["meta"].tobytes())
    assert read_checkpoint(latest).precision == "fp32"
    result = run_cli("train", "--resume", old, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert read_checkpoint(RunDirectory(old).latest_checkpoint()).precision == "fp32"
    refused = run_cli("train", "--resume", old, "--epochs", "3", "--precision", "bf16")
    assert refused.exit_code == 1 and "made with precision='fp32', but precision='bf16'" in refused.output


def test_a_checkpoint_declaring_an_unknown_precision_is_named(bf16_run, tmp_path):
    crafted = tmp_path / "crafted.npz"
    crafted.write_bytes(RunDirectory(bf16_run[0]).latest_checkpoint().read_bytes())
    _rewrite_meta(crafted, lambda meta: meta.update(precision="fp8"))
    with pytest.raises(CheckpointError, match=r"crafted.npz: meta 'precision' must be one of fp32, bf16, got 'fp8'"):
        read_checkpoint(crafted)


def _evaluate(run, *args):
    result = run_cli("evaluate", run, "--json", "--max-images", "4", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_evaluate_and_sample_decode_at_the_runs_precision_unless_told(bf16_run, numpy_backend):
    out, _ = bf16_run
    default, said = _evaluate(out)
    assert said.rstrip("\n").endswith(", precision bf16")
    bf16, _ = _evaluate(out, "--precision", "bf16")
    fp32, said_fp32 = _evaluate(out, "--precision", "fp32")
    assert default == bf16  # the run's precision, bit for bit
    assert default["perplexity"] != fp32["perplexity"] and "precision" not in said_fp32
    sampled = run_cli("sample", out, "--n", "2", "--seed", "3", "--json")
    assert sampled.exit_code == 0 and sampled.stderr.rstrip("\n").endswith(", precision bf16")


def test_caption_reads_the_runs_precision(bf16_run, shapes, numpy_backend):
    out, _ = bf16_run
    pictures = sorted(shapes[1].iterdir())[:2]
    default = run_cli("caption", out, *pictures)
    assert default.exit_code == 0, default.output
    assert default.stderr.rstrip("\n").endswith(", precision bf16")
    assert len(default.stdout.splitlines()) == 2
    fp32 = run_cli("caption", out, *pictures, "--precision", "fp32")
    assert fp32.exit_code == 0 and "precision" not in fp32.stderr


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_unknown_precision_is_a_usage_error_naming_the_option(command, bf16_run):
    args = ["train", "--precision", "fp16"] if command == "train" else ["evaluate", bf16_run[0], "--precision", "fp16"]
    result = run_cli(*args)
    assert result.exit_code == 2 and "'--precision'" in result.output and "'fp16' is not one of 'fp32', 'bf16'" \
        in result.output


@pytest.mark.parametrize("args, message", [
    (["--dtype", "float64"], "precision='bf16' rounds float32 values to bfloat16, so it needs dtype float32, got "
                             "float64"),
    (["--cell", "mgu"], "cell 'mgu' computes its own matrix products (it is not a GatedCell"),
])
def test_bf16_on_a_model_that_cannot_is_refused_with_the_reason(shapes, tmp_path, args, message):
    if "mgu" in args and "mgu" not in available_cells():
        pytest.skip("the test cells plugin (tests/plugins/captionkit-testcells) is not installed")
    result = run_cli("train", "--data", shapes[0], "--out", tmp_path / "run", *TINY_ARGS, "--precision", "bf16",
                     *args)
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert not (tmp_path / "run").exists()


def test_an_attention_model_trains_at_bf16_and_says_so(tmp_path):
    grid = tmp_path / "grid"
    assert run_cli("data", "synth", grid, "--num-train", 16, "--num-val", 4, "--grid", 2).exit_code == 0
    run = tmp_path / "run"
    _train(run, grid, "--attention", "soft", "--precision", "bf16", "--epochs", "1")
    model, _ = load_model(run, backend="numpy")
    assert model.precision == "bf16" and model.cell.precision == "bf16" and model.cell.mechanism.precision == "bf16"


def _without_bf16(monkeypatch):
    if not kernels.is_available():
        pytest.skip("the compiled kernels are not built, so there is no compiled bf16 to be missing")
    monkeypatch.setattr(kernels, "bf16_available", lambda: False)  # a CPU without AVX512-BF16


def test_a_cpu_without_bf16_is_told_in_one_line_what_to_do(shapes, bf16_run, tmp_path, monkeypatch):
    _without_bf16(monkeypatch)
    args = [a if a != "numpy" else "cython" for a in TINY_ARGS]
    result = run_cli("train", "--data", shapes[0], "--out", tmp_path / "run", *args, "--precision", "bf16")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "needs a CPU with AVX512-BF16" in result.output and "--backend numpy" in result.output
    monkeypatch.setenv("CAPTIONKIT_BACKEND", "cython")
    refused = run_cli("evaluate", bf16_run[0], "--max-images", "2")
    assert refused.exit_code == 1 and "AVX512-BF16" in refused.output and "--precision fp32" in refused.output
    assert run_cli("evaluate", bf16_run[0], "--max-images", "2", "--precision", "fp32").exit_code == 0


def test_compiled_bf16_training_where_the_cpu_has_it(shapes, tmp_path):
    if not kernels.bf16_available():
        pytest.skip("this CPU (or the build) has no AVX512-BF16: `captionkit info` says which")
    args = [a if a != "numpy" else "cython" for a in TINY_ARGS]
    out = tmp_path / "compiled"
    result = run_cli("train", "--data", shapes[0], "--out", out, *args, "--epochs", "1", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert read_checkpoint(RunDirectory(out).latest_checkpoint()).precision == "bf16"
