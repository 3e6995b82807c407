"""captionkit.resume: a checkpoint's fit to a run, its position in the run's plan, and finished runs."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from captionkit import CaptioningRNN
from captionkit.checkpoint_schema import Checkpoint, CheckpointError, save_checkpoint
from captionkit.options import TrainConfig
from captionkit.resume import check_fits, check_fits_plan, finished, initial_checkpoint
from captionkit.runs import RunDirectory
from captionkit.spec import ModelSpec

WORDS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat"]
SPEC = ModelSpec("rnn", (4,), 3, 5, len(WORDS))


def _checkpoint(iteration=0, epoch=0, run_state=None):
    training = None if iteration == 0 else {"iteration": iteration, "epoch": epoch}
    return Checkpoint(path=Path("run/checkpoints/ckpt.npz"), spec=SPEC, idx_to_word=list(WORDS), config={},
                      params={}, training=training, run_state=run_state or {})


def test_check_fits_passes_the_same_model_and_names_what_differs():
    check_fits(_checkpoint(), SPEC, WORDS, "")
    with pytest.raises(CheckpointError, match=r"ckpt\.npz: the checkpoint has cell_type='rnn', but this run needs "
                                              r"cell_type='lstm' \(why\)$"):
        check_fits(_checkpoint(), ModelSpec("lstm", (4,), 3, 5, len(WORDS)), WORDS, " (why)")
    with pytest.raises(CheckpointError, match=r"has input_dim=4, but this run needs input_dim=7"):
        check_fits(_checkpoint(), ModelSpec("rnn", (7,), 3, 5, len(WORDS)), WORDS, "")
    with pytest.raises(CheckpointError, match=r"the dataset's vocabulary differs from the checkpoint's \(word 4 is "
                                              r"'a' in the checkpoint but 'the' in the dataset\)"):
        check_fits(_checkpoint(), SPEC, WORDS[:4] + ["the", "cat"], "")


def test_check_fits_plan_needs_a_position_within_the_run():
    solver = SimpleNamespace(iterations_per_epoch=10, num_iterations=30, num_epochs=3)
    check_fits_plan(_checkpoint(iteration=25, epoch=2), solver)
    with pytest.raises(CheckpointError, match=r"at iteration 40, beyond the 30 iterations of this run"):
        check_fits_plan(_checkpoint(iteration=40, epoch=4), solver)
    with pytest.raises(CheckpointError, match=r"'training\.epoch' is 1, but iteration 25 .* is in epoch 2"):
        check_fits_plan(_checkpoint(iteration=25, epoch=1), solver)


def test_finished_says_why_a_run_has_nothing_left():
    solver = SimpleNamespace(num_iterations=30)
    cfg = TrainConfig(epochs=3, patience=2)
    assert finished(_checkpoint(iteration=20, epoch=2), cfg, solver) is None
    assert "all 30 iterations of its 3 epochs" in finished(_checkpoint(iteration=30, epoch=3), cfg, solver)
    stopped = {"stopped_early": True, "stale": 2, "monitor": "CIDEr"}
    assert "stopped early at iteration 20" in finished(_checkpoint(20, 2, stopped), cfg, solver)
    assert finished(_checkpoint(20, 2, stopped), TrainConfig(epochs=3, patience=5), solver) is None


def test_initial_checkpoint_prefers_the_runs_best(tmp_path):
    model = CaptioningRNN({w: i for i, w in enumerate(WORDS)}, input_dim=4, wordvec_dim=3, hidden_dim=5, seed=0)
    run = RunDirectory(tmp_path / "run")
    save_checkpoint(run.checkpoint_path(7), model)
    assert initial_checkpoint(run.root).path == run.checkpoint_path(7)
    save_checkpoint(run.best_checkpoint, model)
    assert initial_checkpoint(run.root).path == run.best_checkpoint
    assert initial_checkpoint(run.checkpoint_path(7)).spec == model.spec
