"""captionkit.train: the run directory it leaves, reproducibility, interrupted and resumed runs, faults."""
import json
import os
import signal

import h5py
import numpy as np
import pytest

import captionkit
from captionkit import CaptioningRNN, load_model
from captionkit.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from captionkit.data import BundleError, load_images
from captionkit.evaluation import caption_text
from captionkit.runs import ConfigError, RunDirectory
from captionkit.solver import TrainingDivergedError
from captionkit.training import TrainConfig
from conftest import bundle_files
from training_helpers import TINY, learnable_bundle, small_vocab, tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("data") / "bundle", images=True)


def _params(run_or_checkpoint):
    return load_model(run_or_checkpoint)[0].params


def _assert_identical(params, expected):
    assert set(params) == set(expected)
    for name in expected:
        assert params[name].dtype == expected[name].dtype
        assert np.array_equal(params[name], expected[name]), name


@pytest.fixture(scope="module")
def straight_run(bundle, tmp_path_factory):
    """An uninterrupted run of 3 epochs (18 iterations) with checkpoints every 4 iterations."""
    return captionkit.train(data=bundle, out=tmp_path_factory.mktemp("runs") / "straight", seed=7,
                            checkpoint_every=4, **dict(TINY, epochs=3))


def test_run_directory_holds_everything(straight_run, bundle):
    result, run = straight_run, RunDirectory(straight_run.run_dir)
    assert result.iteration == result.num_iterations == 18 and result.interrupted is None
    assert TrainConfig.from_mapping(json.loads(run.config.read_text())) == result.config
    assert result.config.data == str(bundle.resolve()) and result.config.seed == 7

    records = run.read_metrics()
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["iteration"] for r in train_records] == list(range(1, 19))
    assert [r["loss"] for r in train_records] == result.loss_history
    val_records = [r for r in records if r["kind"] == "val"]
    assert [r["iteration"] for r in val_records] == [6, 12, 18]  # once per epoch of 48 captions / 8
    assert {k: val_records[-1][k] for k in result.val_metrics} == result.val_metrics
    assert set(result.val_metrics) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L", "loss", "perplexity"}
    # The learning rate decays by lr_decay after each epoch.
    rates = {r["epoch"]: r["learning_rate"] for r in train_records}
    lr, decay = result.config.lr, result.config.lr_decay
    assert rates[0] == lr and rates[1] == pytest.approx(lr * decay) and rates[3] == pytest.approx(lr * decay**3)

    assert [it for it, _ in run.list_checkpoints()] == [12, 16, 18]  # every 4, keep 3, and the end
    assert result.checkpoint == run.checkpoint_path(18)
    summary = json.loads(run.summary.read_text())
    assert summary["final_loss"] == result.final_loss and summary["val_metrics"] == result.val_metrics

    for png in (run.loss_plot, run.samples_grid):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    text = run.samples_text.read_text()
    assert len(result.samples) == 3
    for sample in result.samples:
        assert f"val image {sample['image']}" in text and f"generated: {sample['generated']}" in text
        assert len(sample["references"]) == 2  # two captions per image in the bundle


def test_samples_are_the_models_greedy_captions(straight_run, bundle):
    model, info = load_model(straight_run.run_dir)
    data = captionkit.data.load_coco_data(bundle)
    images = [s["image"] for s in straight_run.samples]
    sampled = model.sample(data["val_features"][images], max_length=data["val_captions"].shape[1] - 1)
    assert [s["generated"] for s in straight_run.samples] == [caption_text(r, info["idx_to_word"]) for r in sampled]
    for sample in straight_run.samples:
        rows = data["val_captions"][data["val_image_idxs"] == sample["image"]]
        assert sample["references"] == [caption_text(r, info["idx_to_word"]) for r in rows]


def test_a_learnable_dataset_is_learned(tmp_path):
    """Captions that follow from the features: the loss falls to near zero and validation captions are right."""
    result = captionkit.train(data=learnable_bundle(tmp_path / "bundle"), out=tmp_path / "run",
                              **dict(TINY, epochs=12, lr=2e-2, eval_every=0))
    first, last = np.mean(result.loss_history[:3]), np.mean(result.loss_history[-3:])
    assert first > 0.9 * 5 * np.log(44)  # about a uniform guess over 44 words for 5 targets
    assert last < 0.05 * first
    assert result.val_metrics["BLEU-4"] > 0.95 and result.val_metrics["CIDEr-D"] > 2.0
    assert all(s["generated"] == s["references"][0] for s in result.samples)


def test_same_seed_same_parameters(straight_run, bundle, tmp_path):
    again = captionkit.train(data=bundle, out=tmp_path / "again", seed=7, checkpoint_every=4, **dict(TINY, epochs=3))
    _assert_identical(_params(again.checkpoint), _params(straight_run.checkpoint))
    assert again.loss_history == straight_run.loss_history
    other = captionkit.train(data=bundle, out=tmp_path / "other", seed=8, **dict(TINY, epochs=1))
    assert not np.array_equal(_params(other.checkpoint)["Wh"], _params(straight_run.run_dir / "checkpoints" /
                                                                        "ckpt-00000012.npz")["Wh"])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_and_resume_is_bit_identical(signum, straight_run, bundle, tmp_path):
    """A signal at iteration 9 stops training with a checkpoint there; resuming ends exactly as the straight run."""

    def send_at_9(event):
        if event["event"] == "iteration" and event["iteration"] == 9:
            os.kill(os.getpid(), signum)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # SIG_IGN under nohup
    stopped = captionkit.train(data=bundle, out=tmp_path / "run", seed=7, checkpoint_every=4, callback=send_at_9,
                               **dict(TINY, epochs=3))
    assert stopped.interrupted == signal.Signals(signum).name and stopped.iteration == 9
    assert read_checkpoint(stopped.checkpoint).iteration == 9
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # the caller's handlers are restored

    resumed = captionkit.train(resume=stopped.run_dir)
    assert resumed.run_dir == stopped.run_dir and resumed.iteration == 18
    _assert_identical(_params(resumed.checkpoint), _params(straight_run.checkpoint))
    assert resumed.loss_history == straight_run.loss_history
    iterations = [r["iteration"] for r in RunDirectory(resumed.run_dir).read_metrics() if r["kind"] == "train"]
    assert iterations == list(range(1, 19))


def test_resume_with_more_epochs_continues_the_schedule(straight_run, bundle, tmp_path):
    first = captionkit.train(data=bundle, out=tmp_path / "run", seed=7, checkpoint_every=4, **dict(TINY, epochs=2))
    longer = captionkit.train(resume=first.checkpoint, epochs=3)
    _assert_identical(_params(longer.checkpoint), _params(straight_run.checkpoint))


def test_resume_from_a_checkpoint_into_a_new_directory(straight_run, tmp_path):
    branch = captionkit.train(resume=straight_run.run_dir / "checkpoints" / "ckpt-00000012.npz",
                              out=tmp_path / "branch")
    _assert_identical(_params(branch.checkpoint), _params(straight_run.checkpoint))
    iterations = [r["iteration"] for r in RunDirectory(branch.run_dir).read_metrics() if r["kind"] == "train"]
    assert iterations == list(range(1, 19))


@pytest.mark.parametrize("option, value, message", [
    ("cell", "lstm", r"made with cell='rnn', but cell='lstm' was asked for"),
    ("hidden_dim", 20, r"made with hidden_dim=12, but hidden_dim=20 was asked for"),
    ("wordvec_dim", 4, r"made with wordvec_dim=8, but wordvec_dim=4"),
    ("seed", 3, r"made with seed=7, but seed=3"),
    ("lr", 1e-3, r"made with lr=0.002, but lr=0.001"),
])
def test_resume_refuses_another_model_or_optimiser(option, value, message, straight_run):
    with pytest.raises(CheckpointError, match=r"ckpt-00000018\.npz: the checkpoint was " + message):
        captionkit.train(resume=straight_run.run_dir, **{option: value})


def test_resume_refuses_a_changed_vocabulary(tmp_path):
    bundle = tiny_bundle(tmp_path / "bundle")
    first = captionkit.train(data=bundle, out=tmp_path / "run", **TINY)
    vocab = small_vocab()
    vocab["idx_to_word"][5] = "zebra"  # the dataset changed under the run
    vocab["word_to_idx"] = {w: i for i, w in enumerate(vocab["idx_to_word"])}
    bundle_files(bundle)["vocab"].write_text(json.dumps(vocab))
    with pytest.raises(CheckpointError, match=r"ckpt-00000012\.npz: the dataset's vocabulary differs from the "
                                              r"checkpoint's \(word 5 is 'word1' in the checkpoint but 'zebra' in "
                                              r"the dataset\)"):
        captionkit.train(resume=first.run_dir, epochs=3)


def test_resume_refuses_a_model_only_checkpoint(straight_run, tmp_path):
    model, _ = load_model(straight_run.checkpoint)
    path = save_checkpoint(tmp_path / "model.npz", model, config=straight_run.config.to_dict())
    with pytest.raises(CheckpointError, match=r"model\.npz: holds a model without training state"):
        captionkit.train(resume=path)


def test_run_directory_is_never_overwritten(straight_run, bundle, tmp_path):
    with pytest.raises(ConfigError, match=r"straight: already holds a run; resume it with --resume"):
        captionkit.train(data=bundle, out=straight_run.run_dir, **TINY)
    older = straight_run.run_dir / "checkpoints" / "ckpt-00000012.npz"
    with pytest.raises(ConfigError, match=r"has a checkpoint newer \(iteration 18\) than the one resumed from"):
        captionkit.train(resume=older)


def test_divergence_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(bundle, tmp_path, monkeypatch):
    real_loss, calls = CaptioningRNN.loss, []

    def loss_that_turns_nan(self, features, captions):
        calls.append(1)
        loss, grads = real_loss(self, features, captions)
        return (np.float32(np.nan) if len(calls) == 11 else loss), grads

    monkeypatch.setattr(CaptioningRNN, "loss", loss_that_turns_nan)
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"diverged at iteration 11 \(epoch 2\): the loss is nan; .* "
                                                    r"The last good checkpoint is .*ckpt-00000008\.npz"):
        captionkit.train(data=bundle, out=out, checkpoint_every=4, **TINY)
    run = RunDirectory(out)
    assert [it for it, _ in run.list_checkpoints()] == [4, 8]
    params = _params(out)
    assert all(np.isfinite(v).all() for v in params.values())


def test_divergence_in_a_gradient_names_the_parameter(bundle, tmp_path, monkeypatch):
    real_loss = CaptioningRNN.loss

    def inf_gradient(self, features, captions):
        loss, grads = real_loss(self, features, captions)
        grads["Wh"][0, 0] = np.inf
        return loss, grads

    monkeypatch.setattr(CaptioningRNN, "loss", inf_gradient)
    with pytest.raises(TrainingDivergedError, match=r"iteration 1 \(epoch 1\): the gradient of Wh is inf; .*"
                                                    r"No checkpoint had been saved yet"):
        captionkit.train(data=bundle, out=tmp_path / "run", **TINY)


def test_config_file_json_and_toml(bundle, tmp_path):
    toml = tmp_path / "options.toml"
    toml.write_text(f'data = "{bundle}"\nhidden-dim = 10\nwordvec_dim = 6\nepochs = 1\nbatch_size = 8\n'
                    'eval_images = 4\nnum_samples = 0\n')
    result = captionkit.train(toml, out=tmp_path / "a", seed=2)
    assert (result.config.hidden_dim, result.config.wordvec_dim, result.config.seed) == (10, 6, 2)
    again = captionkit.train(RunDirectory(result.run_dir).config, out=tmp_path / "b")  # config.json reused
    _assert_identical(_params(again.checkpoint), _params(result.checkpoint))


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", '{"hiden_dim": 3}', r"bad\.json: unknown option 'hiden_dim'; did you mean 'hidden_dim'\?"),
    ("bad.json", '{"epochs": "many"}', r"bad\.json: option 'epochs' is 'many', expected an integer >= 1"),
    ("bad.json", '{"lr": -1}', r"option 'lr' is -1, expected a positive finite number"),
    ("bad.json", '{"update_rule": "lbfgs"}', r"option 'update_rule' is 'lbfgs', expected one of sgd, sgd_momentum"),
    ("bad.json", '[1, 2]', r"bad\.json: expected an object of option names to values, got list"),
    ("bad.json", '{"epochs": 2', r"bad\.json: not valid JSON"),
    ("bad.toml", 'epochs = [', r"bad\.toml: not valid TOML"),
    ("bad.yaml", 'epochs: 2', r"bad\.yaml: config files must be JSON \(\.json\) or TOML \(\.toml\)"),
    ("bad.pkl", '', r"config files must be JSON"),
])
def test_bad_config_file(name, text, message, tmp_path):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        captionkit.train(path, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bad_bundle_stops_before_training(bundle, tmp_path):
    broken = tiny_bundle(tmp_path / "broken")
    with h5py.File(bundle_files(broken)["val_features"], "a") as f:
        f["features"][1, 2] = np.inf
    with pytest.raises(BundleError, match=r"val2014_vgg16_fc7_pca\.h5: dataset 'features' holds a non-finite "
                                          r"value inf at \[1, 2\]"):
        captionkit.train(data=broken, out=tmp_path / "run", **TINY)


@pytest.mark.parametrize("key, value, message", [
    ("images", np.zeros((8, 64, 64), np.uint8), r"dataset 'images' has dtype uint8 and shape \(8, 64, 64\)"),
    ("images", np.zeros((8, 64, 64, 3), np.float32), r"dataset 'images' has dtype float32"),
    ("pixels", np.zeros((8, 64, 64, 3), np.uint8), r"missing dataset 'images' \(found: pixels\)"),
])
def test_bad_image_file(key, value, message, tmp_path):
    path = tiny_bundle(tmp_path / "b")
    with h5py.File(bundle_files(path)["val_images"], "w") as f:
        f[key] = value
    with pytest.raises(BundleError, match=r"val2014_images\.h5: " + message):
        load_images(path, "val", [0, 1])


def test_load_images_keeps_the_requested_order(bundle):
    with h5py.File(bundle_files(bundle)["val_images"]) as f:
        everything = f["images"][()]
    assert np.array_equal(load_images(bundle, "val", [5, 1, 5, 0]), everything[[5, 1, 5, 0]])
    assert load_images(bundle.parent / "nowhere", "val", [0]) is None
    with pytest.raises(BundleError, match=r"image index 8 is out of range for 8 images"):
        load_images(bundle, "val", [8])
