"""captionkit.loading and the run lookups beside it: models from checkpoints, a checkpoint's run."""
from pathlib import Path

import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.checkpoint_schema import Checkpoint, CheckpointError, read_checkpoint, save_checkpoint
from captionkit.loading import build_model, load_model, new_model
from captionkit.runs import RunDirectory, resolve_checkpoint, run_dir_of
from captionkit.spec import ModelSpec

VOCAB = {w: i for i, w in enumerate(["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat"])}


def test_new_model_is_the_model_of_its_spec():
    spec = ModelSpec("rnn", (4,), 3, 5, len(VOCAB), "float64")
    model = new_model(spec, VOCAB, seed=3)
    twin = CaptioningRNN(VOCAB, input_dim=4, wordvec_dim=3, hidden_dim=5, dtype=np.float64, seed=3)
    assert model.spec == spec
    assert all(np.array_equal(model.params[k], twin.params[k]) for k in twin.params)
    grid = ModelSpec("rnn", (2, 4), 3, 5, len(VOCAB), attention="soft", attention_dim=6)
    assert new_model(grid, VOCAB, seed=3).spec == grid


def test_build_model_restores_the_parameters_and_names_a_missing_cell(tmp_path):
    model = CaptioningRNN(VOCAB, input_dim=4, wordvec_dim=3, hidden_dim=5, seed=1)
    model.params["b_vocab"] += 0.5
    checkpoint = read_checkpoint(save_checkpoint(tmp_path / "m.npz", model))
    rebuilt = build_model(checkpoint)
    assert rebuilt.spec == model.spec and rebuilt.word_to_idx == VOCAB
    assert all(np.array_equal(rebuilt.params[k], model.params[k]) for k in model.params)
    missing = Checkpoint(path=Path("x.npz"), spec=ModelSpec("nope", (4,), 3, 5, len(VOCAB)),
                         idx_to_word=list(VOCAB), config={}, params={})
    with pytest.raises(CheckpointError, match=r"x\.npz: the checkpoint was made with cell 'nope'"):
        build_model(missing)


def test_a_checkpoint_belongs_to_a_run_only_inside_one(tmp_path):
    model = CaptioningRNN(VOCAB, input_dim=4, wordvec_dim=3, hidden_dim=5, seed=1)
    run = RunDirectory(tmp_path / "run")
    path = save_checkpoint(run.checkpoint_path(3), model)
    assert run_dir_of(path) is None  # no config.json: not a run yet
    run.write_json(run.config, {})
    assert run_dir_of(path) == run.root.resolve() and run_dir_of(tmp_path / "m.npz") is None
    assert resolve_checkpoint(run.root) == path and resolve_checkpoint(path) == path
    _, info = load_model(run.root)
    assert info["run_dir"] == run.root.resolve() and info["model"] == model.spec.to_meta()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: a directory with no checkpoints"):
        resolve_checkpoint(tmp_path / "empty")
