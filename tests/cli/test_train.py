"""`captionkit train` from the outside: options, output modes, clean errors, and runs stopped by signals or killed."""
import json
import os
import pickle
import re
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from bundle_damage import BAD_BUNDLES, corrupt
from captionkit import load_model
from captionkit.runs import RunDirectory
from conftest import bundle_files
from training_helpers import run_cli, tiny_bundle

TINY_ARGS = ["--hidden-dim", "12", "--wordvec-dim", "8", "--batch-size", "8", "--epochs", "2", "--eval-images", "6",
             "--num-samples", "3"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("data") / "bundle")


def test_help_documents_every_option():
    result = run_cli("train", "--help")
    assert result.exit_code == 0
    for option in ("--cell", "--data", "--pca / --no-pca", "--max-train", "--hidden-dim", "--wordvec-dim",
                   "--batch-size", "--epochs", "--update-rule", "--lr", "--lr-decay", "--seed", "--dtype",
                   "--backend", "--eval-every", "--out", "--resume", "--config", "--quiet", "--json",
                   "--checkpoint-every"):
        assert option in result.output
    assert "captionkit train --resume" in result.output
    assert re.search(r"hidden state\.\s+\[default:\s+256", result.output)
    assert "train " in run_cli("--help").output


def test_train_reports_progress_and_where_the_run_went(bundle, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--data", bundle, "--out", out, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert f"Run saved in {out}" in result.output
    assert "iteration 12/12" in result.output and "val @ iteration 6 (6 images, " in result.output
    assert "): BLEU-1 " in result.output
    assert "Files: config.json, metrics.jsonl, loss.png, samples.txt" in result.output
    assert RunDirectory(out).latest_checkpoint() == RunDirectory(out).checkpoint_path(12)


def test_quiet_prints_only_the_run_directory(bundle, tmp_path):
    result = run_cli("train", "--data", bundle, "--out", tmp_path / "run", "--quiet", *TINY_ARGS)
    assert result.exit_code == 0 and result.output == f"{tmp_path / 'run'}\n"


def test_json_progress_is_one_object_per_line(bundle, tmp_path):
    result = run_cli("train", "--data", bundle, "--out", tmp_path / "run", "--json", *TINY_ARGS)
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.output.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    iterations = [e for e in events if e["event"] == "iteration"]
    assert [e["iteration"] for e in iterations] == list(range(1, 13))
    assert all(e["eta"] >= 0 and np.isfinite(e["loss"]) for e in iterations)
    assert [e["iteration"] for e in events if e["event"] == "eval"] == [6, 12]
    assert [e["iteration"] for e in events if e["event"] == "checkpoint"] == [6, 12]
    assert events[-1]["iteration"] == 12 and set(events[-1]["val_metrics"]) >= {"BLEU-4", "CIDEr-D", "ROUGE-L"}


def test_config_file_with_command_line_override(bundle, tmp_path):
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"data": str(bundle), "hidden-dim": 10, "wordvec_dim": 6, "epochs": 1,
                                  "batch_size": 8, "seed": 3, "out": str(tmp_path / "from-config")}))
    result = run_cli("train", "--config", config, "--hidden-dim", 11, "--quiet")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "from-config" / "config.json").read_text())
    assert (saved["hidden_dim"], saved["wordvec_dim"], saved["epochs"], saved["seed"]) == (11, 6, 1, 3)


def test_bad_config_file_names_the_file_and_option(tmp_path):
    config = tmp_path / "options.toml"
    config.write_text("epochs = 0\n")
    result = run_cli("train", "--config", config)
    assert result.exit_code == 2
    assert "options.toml: option 'epochs' is 0, expected an integer >= 1" in result.output


@pytest.mark.parametrize("kind", BAD_BUNDLES)
def test_bad_bundle_is_one_clean_error(kind, bundle_dir, tmp_path):
    pattern = corrupt(kind, bundle_dir)
    result = run_cli("train", "--data", bundle_dir, "--out", tmp_path / "run", *TINY_ARGS)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_exception(tmp_path):
    result = run_cli("--debug", "train", "--data", tmp_path / "nowhere")
    assert result.exit_code == 1 and type(result.exception).__name__ == "BundleError"
    result = run_cli("train", "--data", tmp_path / "nowhere", env={"CAPTIONKIT_DEBUG": "1"})
    assert type(result.exception).__name__ == "BundleError"


def test_unexpected_exception_is_reported_as_a_bug(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr("captionkit.cli.train.train", broken)
    result = run_cli("train", "--data", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: unexpected KeyError: 'oops' (this is a bug in captionkit; rerun with `captionkit --debug" \
        in result.output


def test_divergence_is_a_clean_error_naming_the_iteration(bundle, tmp_path):
    # lr 1e38 overflows float32 parameters in the first update; smaller rates can leave every tanh saturated at
    # exactly +-1, where no gradient flows and the loss stays finite, however large.
    result = run_cli("train", "--data", bundle, "--out", tmp_path / "run", "--update-rule", "sgd", "--lr", "1e38",
                    "--checkpoint-every", 1, "--quiet", *TINY_ARGS)
    assert result.exit_code == 1 and "Traceback" not in result.output
    # Which goes first, the loss or a gradient, depends on how the batch was split over threads.
    assert re.search(r"Error: training diverged at iteration 2 \(epoch 1\): the (loss|gradient of \w+) is nan",
                     result.output), result.output
    assert f"The last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'ckpt-00000001.npz'}" in result.output
    model, info = load_model(tmp_path / "run")
    assert info["iteration"] == 1 and all(np.isfinite(v).all() for v in model.params.values())


def test_resume_with_a_conflicting_option(bundle, tmp_path):
    assert run_cli("train", "--data", bundle, "--out", tmp_path / "run", "--quiet", *TINY_ARGS).exit_code == 0
    result = run_cli("train", "--resume", tmp_path / "run", "--cell", "gru")
    assert result.exit_code == 1
    assert "the checkpoint was made with cell='rnn', but cell='gru' was asked for" in result.output
    result = run_cli("train", "--resume", tmp_path / "run", "--epochs", 3, "--quiet")  # epochs may grow
    assert result.exit_code == 0 and load_model(tmp_path / "run")[1]["iteration"] == 18


# ------------------------------------------------------------------------------------------------- real processes
LONG_ARGS = ["--hidden-dim", "12", "--wordvec-dim", "8", "--batch-size", "8", "--epochs", "150", "--eval-every", "0",
             "--eval-images", "4", "--num-samples", "0", "--checkpoint-every", "100", "--seed", "5"]  # 900 iterations


def _command(*args):
    return [sys.executable, "-c", "from captionkit.cli import main; main()", "train", *map(str, args)]


def _env():
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.mark.slow
@pytest.mark.parametrize("variable, value, message", [
    ("CAPTIONKIT_NUM_THREADS", "0", "CAPTIONKIT_NUM_THREADS must be a positive integer, got '0'"),
    ("CAPTIONKIT_PIN_THREADS", "off",
     "CAPTIONKIT_PIN_THREADS must be 0 (let the system place threads) or 1, got 'off'"),
])
def test_bad_thread_setting_is_refused_before_anything_is_written(bundle, tmp_path, variable, value, message):
    env = dict(_env(), CAPTIONKIT_BACKEND="cython", **{variable: value})
    done = subprocess.run(_command("--data", bundle, "--out", tmp_path / "run", *TINY_ARGS), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    assert f"Error: {message}" in done.stderr + done.stdout
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def reference(bundle, tmp_path_factory):
    """Final parameters of an uninterrupted run with LONG_ARGS, in its own process."""
    out = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(_command("--data", bundle, "--out", out, "--quiet", *LONG_ARGS), check=True, env=_env(),
                   capture_output=True, timeout=300)
    return load_model(out)[0].params


def _start(bundle, out):
    return subprocess.Popen(_command("--data", bundle, "--out", out, "--json", *LONG_ARGS), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(process, predicate):
    """Read JSON events from the process until ``predicate(event)``; returns that event."""
    for line in process.stdout:
        event = json.loads(line)
        if predicate(event):
            return event
    raise AssertionError(f"the run ended first: {process.stderr.read()}")


def _resume_and_compare(out, reference):
    resumed = subprocess.run(_command("--resume", out, "--quiet"), env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    model, info = load_model(out)
    assert info["iteration"] == 900
    for name, value in reference.items():
        assert np.array_equal(model.params[name], value), name
    train_records = [r["iteration"] for r in RunDirectory(out).read_metrics() if r["kind"] == "train"]
    assert train_records == list(range(1, 901))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_and_resume_is_bit_identical(signum, bundle, reference, tmp_path):
    out = tmp_path / "run"
    process = _start(bundle, out)
    _wait_for(process, lambda e: e["event"] == "iteration" and e["iteration"] >= 20)
    process.send_signal(signum)
    events = [json.loads(line) for line in process.stdout]
    assert process.wait(timeout=60) == 128 + signum
    stopped = [e for e in events if e["event"] == "interrupted"]
    assert stopped and stopped[0]["signal"] == signal.Signals(signum).name
    iteration = stopped[0]["iteration"]
    assert 20 <= iteration < 900 and "Traceback" not in process.stderr.read()
    assert RunDirectory(out).latest_checkpoint() == RunDirectory(out).checkpoint_path(iteration)
    _resume_and_compare(out, reference)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical(bundle, reference, tmp_path):
    out = tmp_path / "run"
    process = _start(bundle, out)
    _wait_for(process, lambda e: e["event"] == "checkpoint" and e["iteration"] >= 200)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    last = RunDirectory(out).list_checkpoints()[-1][0]
    assert 200 <= last < 900
    _resume_and_compare(out, reference)


# --------------------------------------------------------------------------------------- data is never code
class _Payload:
    """Unpickling this creates the file ``marker``: proof that nothing in a refused file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_into_hdf5_opaque(bundle, marker):
    blob = np.frombuffer(pickle.dumps(_Payload(marker)), dtype=np.uint8)
    with h5py.File(bundle_files(bundle)["captions"], "a") as f:
        del f["train_captions"]
        f["train_captions"] = np.void(blob.tobytes())  # an opaque blob where integer ids belong
    return r"coco2014_captions\.h5: dataset 'train_captions' has dtype \|V\d+, expected numbers"


def _pickled_into_hdf5_strings(bundle, marker):
    with h5py.File(bundle_files(bundle)["train_features"], "a") as f:
        del f["features"]
        rows = np.empty(1, dtype=object)
        rows[0] = np.frombuffer(pickle.dumps(_Payload(marker)), dtype=np.uint8)
        f.create_dataset("features", data=rows, dtype=h5py.vlen_dtype(np.uint8))  # ragged rows of pickle bytes
    return r"train2014_vgg16_fc7_pca\.h5: dataset 'features' has dtype object, expected numbers"


def _pickle_instead_of_hdf5(bundle, marker):
    bundle_files(bundle)["val_features"].write_bytes(pickle.dumps(_Payload(marker)))
    return r"val2014_vgg16_fc7_pca\.h5: cannot read HDF5 file"


def _pickle_instead_of_vocabulary(bundle, marker):
    bundle_files(bundle)["vocab"].write_bytes(pickle.dumps(_Payload(marker)))
    return r"coco2014_vocab\.json: not a readable JSON vocabulary"


@pytest.mark.parametrize("craft", [_pickled_into_hdf5_opaque, _pickled_into_hdf5_strings, _pickle_instead_of_hdf5,
                                   _pickle_instead_of_vocabulary])
def test_bundle_carrying_a_pickle_is_refused_and_nothing_runs(craft, tmp_path):
    bundle, marker = tiny_bundle(tmp_path / "bundle"), tmp_path / "pwned"
    pattern = craft(bundle, marker)
    result = run_cli("train", "--data", bundle, "--out", tmp_path / "run", *TINY_ARGS)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(pattern, result.output), result.output
    assert not marker.exists()


@pytest.mark.parametrize("name", ["options.json", "options.toml"])
def test_config_file_carrying_a_pickle_is_refused_and_nothing_runs(name, tmp_path):
    config, marker = tmp_path / name, tmp_path / "pwned"
    config.write_bytes(pickle.dumps(_Payload(marker)))
    result = run_cli("train", "--config", config)
    assert result.exit_code == 2 and re.search(rf"{name}: not (UTF-8 text|valid (JSON|TOML))", result.output)
    assert not marker.exists()


def test_checkpoint_carrying_a_pickle_is_refused_by_resume(tmp_path):
    marker = tmp_path / "pwned"
    run = RunDirectory(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("{}")
    np.savez(run.checkpoint_path(10), meta=np.zeros(3, np.uint8), **{"param/W_embed": np.array([_Payload(marker)])})
    result = run_cli("train", "--resume", run.root)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "is an object array (pickled Python objects), which captionkit never loads" in result.output
    assert not marker.exists()


def test_first_use_of_the_builtin_dataset_is_announced(monkeypatch, tmp_path, bundle):
    """The first build is reported through train()'s events and the same display as training's progress."""
    import captionkit.synthetic

    def fake_builder(progress=None):  # stands in for the first build, and hands over a small bundle
        progress("drawing train scenes", 4, 8)
        progress("drawing train scenes", 8, 8)
        return bundle

    monkeypatch.delenv("CAPTIONKIT_DATA_DIR", raising=False)
    monkeypatch.setattr(captionkit.synthetic, "builtin_dataset_dir", fake_builder)
    result = run_cli("train", "--out", tmp_path / "run", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Building the built-in dataset (first use only; it is cached for later runs)...\n"
        "  drawing train scenes: 8/8\nTraining the rnn cell"
    )


def test_a_model_too_large_for_the_machine_is_refused_before_allocating(finished):
    _, bundle, _ = finished
    result = run_cli("train", "--data", bundle, "--hidden-dim", 10**9, "--out", bundle.parent / "huge")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "hidden_dim=1000000000" in result.output and "GiB of parameters" in result.output
    assert "MemoryError" not in result.output


def test_a_batch_too_large_for_the_machine_is_refused_before_anything_is_written(finished):
    _, bundle, _ = finished
    out = bundle.parent / "huge-batch"
    result = run_cli("train", "--data", bundle, "--batch-size", 10**8, "--out", out)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "batch_size=100000000: one training step on captions of" in result.output
    assert "GiB: more than half of this machine's" in result.output and not out.exists()


def test_config_files_that_are_not_small_regular_files(tmp_path):
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    result = run_cli("train", "--config", zero)
    assert result.exit_code != 0
    assert "zero.json: is a device; a config file is read only from a regular file" in result.output
    big = tmp_path / "big.json"
    big.write_text("[" + " " * 2**21 + "]")
    result = run_cli("train", "--config", big)
    assert result.exit_code != 0 and "big.json: a config file is at most 1.0 MiB (1048576 bytes)" in result.output
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    result = run_cli("train", "--config", nested)
    assert result.exit_code != 0 and "nested.json: not valid JSON" in result.output


@pytest.mark.parametrize("args, message", [
    (["train", "--cell", "lsmt"], "unknown cell_type 'lsmt' (did you mean 'lstm'?)"),
    (["data", "import", "x", "--karpathy", "y.json", "--encoder", "shape"], "unknown encoder 'shape' (did you mean "
                                                                            "'shapes'?)"),
])
def test_misspelt_names_get_a_suggestion(args, message):
    result = run_cli(*args)
    assert result.exit_code == 1 and message in result.output
