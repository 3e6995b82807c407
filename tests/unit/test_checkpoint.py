"""Checkpoints: exact round trips, atomic writes, and one clear error for each kind of bad or crafted file."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from captionkit import CaptioningRNN, CaptioningSolver, load_model
from captionkit.checkpoint import CheckpointError, build_model, read_checkpoint, save_checkpoint
from captionkit.data import load_coco_data
from captionkit.runs import RunDirectory
from training_helpers import small_vocab, tiny_bundle


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model and solver after 7 Adam updates on a tiny bundle, and a checkpoint of them."""
    data = load_coco_data(tiny_bundle(tmp_path_factory.mktemp("bundle")))
    model = CaptioningRNN(data["word_to_idx"], input_dim=16, wordvec_dim=8, hidden_dim=12, seed=4)
    solver = CaptioningSolver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-2}, lr_decay=0.9,
                              batch_size=10, num_epochs=2, verbose=False, rng=np.random.RandomState(5))
    for _ in range(7):
        solver._step()
        solver.iteration += 1
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt.npz", model, solver, {"seed": 4, "lr": 1e-2})
    return model, solver, path


def _rewrite(src, dst, change):
    """Copy the checkpoint ``src`` to ``dst`` with ``change(members, meta)`` applied (members: name -> array)."""
    with np.load(src) as archive:
        members = {key: archive[key] for key in archive.files}
    original = members["meta"]
    meta = json.loads(original.tobytes())
    change(members, meta)
    if members.get("meta") is original:  # unless the change replaced or removed the member itself
        members["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **members)
    return dst


def test_round_trip_is_exact(trained):
    model, solver, path = trained
    checkpoint = read_checkpoint(path)
    for name, value in model.params.items():
        assert checkpoint.params[name].dtype == value.dtype
        assert np.array_equal(checkpoint.params[name], value)
    state = solver.state_dict()
    assert checkpoint.training["iteration"] == 7 and checkpoint.training["epoch"] == state["epoch"]
    assert checkpoint.training["loss_history"] == state["loss_history"]
    for name, conf in state["optim_configs"].items():
        restored = checkpoint.training["optim_configs"][name]
        assert set(restored) == set(conf) == {"learning_rate", "beta1", "beta2", "epsilon", "m", "v", "t"}
        assert restored["t"] == 7 and restored["learning_rate"] == conf["learning_rate"]
        assert np.array_equal(restored["m"], conf["m"]) and np.array_equal(restored["v"], conf["v"])
    saved_rng, restored_rng = state["rng_state"], checkpoint.training["rng_state"]
    assert saved_rng[0] == restored_rng[0] and np.array_equal(saved_rng[1], restored_rng[1])
    assert saved_rng[2:] == restored_rng[2:]
    assert checkpoint.config == {"seed": 4, "lr": 1e-2}
    assert checkpoint.idx_to_word == small_vocab()["idx_to_word"]


def test_restored_solver_continues_identically(trained, tmp_path):
    """Two solvers, one continuing in memory and one rebuilt from the checkpoint, make the same next updates."""
    model, solver, path = trained
    checkpoint = read_checkpoint(path)
    data = solver.data
    twin_model = build_model(checkpoint)
    twin = CaptioningSolver(twin_model, data, update_rule="adam", optim_config={"learning_rate": 1e-2},
                            lr_decay=0.9, batch_size=10, num_epochs=2, verbose=False, rng=np.random.RandomState(0))
    twin.load_state_dict(checkpoint.training)
    original = CaptioningSolver(build_model(checkpoint), data, update_rule="adam", verbose=False,
                                optim_config={"learning_rate": 1e-2}, lr_decay=0.9, batch_size=10, num_epochs=2,
                                rng=np.random.RandomState(0))
    original.load_state_dict(solver.state_dict())
    twin.train()
    original.train()
    assert twin.loss_history == original.loss_history
    for name in model.params:
        assert np.array_equal(twin_model.params[name], original.model.params[name])


def test_load_model_from_file_and_run_directory(trained, tmp_path):
    model, solver, path = trained
    run = RunDirectory(tmp_path / "run")
    run.write_json(run.config, {})
    older = save_checkpoint(run.checkpoint_path(3), model, solver)
    newest = save_checkpoint(run.checkpoint_path(12), model, solver)
    loaded, info = load_model(run.root)
    assert info["checkpoint"] == newest and info["run_dir"] == run.root.resolve() and info["iteration"] == 7
    assert info["model"] == {"cell_type": "rnn", "input_dim": 16, "wordvec_dim": 8, "hidden_dim": 12,
                             "dtype": "float32"}
    features = np.random.RandomState(0).randn(5, 16)
    assert np.array_equal(loaded.sample(features), model.sample(features))
    _, info = load_model(older)
    assert info["checkpoint"] == older


def test_model_only_checkpoint(trained, tmp_path):
    model, _, _ = trained
    path = save_checkpoint(tmp_path / "model.npz", model)
    loaded, info = load_model(path)
    assert info["iteration"] == 0 and info["run_dir"] is None and read_checkpoint(path).training is None
    assert all(np.array_equal(loaded.params[k], v) for k, v in model.params.items())


def test_failed_write_leaves_previous_checkpoint_intact(trained, tmp_path, monkeypatch):
    """A crash in the middle of writing (simulated by np.savez dying after half its bytes) never touches the
    existing checkpoint and leaves no temporary file behind."""
    model, solver, _ = trained
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, solver)
    before = path.read_bytes()

    real_savez = np.savez

    def dies_halfway(file, **arrays):
        buffer = io.BytesIO()
        real_savez(buffer, **arrays)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("simulated crash: disk full")

    monkeypatch.setattr(np, "savez", dies_halfway)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, model, solver)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]
    read_checkpoint(path)


def _malicious(marker):
    """An object whose unpickling would create ``marker``: proof that nothing in a refused file ran."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return Payload()


def test_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt.npz"
    path.write_bytes(pickle.dumps(_malicious(marker)))
    with pytest.raises(CheckpointError, match=r"ckpt\.npz: the file is a Python pickle.*refusing it"):
        load_model(path)
    assert not marker.exists()


def test_object_array_member_is_refused_without_running_it(trained, tmp_path):
    marker = tmp_path / "pwned"
    crafted = _rewrite(trained[2], tmp_path / "crafted.npz",
                       lambda members, meta: members.update(
                           {"param/W_vocab": np.array([_malicious(marker)], dtype=object)}))
    with pytest.raises(CheckpointError, match=r"member 'param/W_vocab' is an object array \(pickled Python "
                                              r"objects\).*refusing"):
        read_checkpoint(crafted)
    assert not marker.exists()


def _truncate(path, dst):
    dst.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path, dst):
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("param/W_embed.npy")
    raw[info.header_offset + 400] ^= 0xFF  # inside W_embed's data: the zip CRC must catch it
    dst.write_bytes(bytes(raw))


def _npy(path, dst):
    with open(dst, "wb") as f:
        np.save(f, np.zeros(3))


def _meta_change(change):
    return lambda path, dst: _rewrite(path, dst, change)


def _set_member(key, value):
    return _meta_change(lambda members, meta: members.__setitem__(key, value))


def _drop_member(key):
    return _meta_change(lambda members, meta: members.pop(key))


def _set_meta(*keys, value):
    def change(members, meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return _meta_change(change)


BAD_CHECKPOINTS = {
    "truncated": (_truncate, r"truncated or corrupt"),
    "flipped byte": (_flip_byte, r"member 'param/W_embed' cannot be read; the file is truncated or corrupt"),
    "empty file": (lambda p, d: d.write_bytes(b""), r"not a captionkit checkpoint \(empty\)"),
    "npy file": (_npy, r"a single \.npy array"),
    "text file": (lambda p, d: d.write_text("hello"), r"not an \.npz archive"),
    "no meta": (_drop_member("meta"), r"no 'meta' member"),
    "meta not json": (_set_member("meta", np.frombuffer(b"{nope", dtype=np.uint8)), r"'meta': not a readable JSON document"),
    "wrong format": (_set_meta("format", value="other"), r"does not declare format 'captionkit-checkpoint'"),
    "future version": (_set_meta("format_version", value=99), r"checkpoint format version 99"),
    "unknown cell": (_set_meta("model", "cell_type", value="nosuchcell"),
                     r"made with cell 'nosuchcell': unknown cell_type 'nosuchcell'"),
    "hidden size differs": (_set_meta("model", "hidden_dim", value=13),
                            r"'param/W_proj' has shape \(16, 12\), expected \(16, 13\) for the declared model "
                            r"\(cell 'rnn' with input_dim=16, wordvec_dim=8, hidden_dim=13 and 44 words\)"),
    "bad dimension": (_set_meta("model", "wordvec_dim", value=0), r"meta 'model.wordvec_dim' is 0"),
    "missing parameter": (_drop_member("param/Wh"), r"parameters do not match cell 'rnn'; missing \['Wh'\]"),
    "extra parameter": (_set_member("param/Wq", np.zeros(3, np.float32)), r"unexpected \['Wq'\]"),
    "wrong dtype": (_set_member("param/b", np.zeros(12, np.float64)), r"'param/b' has dtype float64, expected float32"),
    "nan parameter": (_set_member("param/b", np.full(12, np.nan, np.float32)), r"'param/b' holds non-finite"),
    "vocabulary without <END>": (_set_meta("idx_to_word", 2, value="<FIN>"), r"'idx_to_word'\[2\] must be <END>"),
    "vocabulary shorter than W_embed": (_meta_change(lambda m, meta: meta["idx_to_word"].pop()),
                                        r"'param/W_embed' has shape \(44, 8\), expected \(43, 8\)"),
    "optimiser state of wrong shape": (_set_member("optim/Wh/m", np.zeros((2, 2), np.float32)),
                                       r"'optim/Wh/m' has shape \(2, 2\)"),
    "rng state missing": (_drop_member("rng/keys"), r"RNG state .* missing or malformed"),
    "unknown member": (_set_member("extra", np.zeros(1)), r"unexpected members \['extra'\]"),
}


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_bad_checkpoint_gives_one_clear_error(kind, trained, tmp_path):
    damage, pattern = BAD_CHECKPOINTS[kind]
    dst = tmp_path / "bad.npz"
    damage(trained[2], dst)
    with pytest.raises(CheckpointError, match=r"bad\.npz: .*" + pattern):
        load_model(dst)


def test_missing_checkpoint_and_empty_run(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.npz: checkpoint not found"):
        load_model(tmp_path / "nowhere.npz")
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match=r"run: a directory with no checkpoints"):
        load_model(tmp_path / "run")
