"""SCST through captionkit.train on a learnable bundle: from a short cross-entropy run, both baselines raise the
solver's sampled reward over the run, and every validation of the run scores CIDEr-D."""
import numpy as np
import pytest

import captionkit
from captionkit.runs import RunDirectory
from training_helpers import learnable_bundle

SIZES = dict(hidden_dim=16, wordvec_dim=8, batch_size=8, eval_images=8, num_samples=0)


@pytest.fixture(scope="module")
def warm_start(tmp_path_factory):
    root = tmp_path_factory.mktemp("scst-integration")
    bundle = learnable_bundle(root / "bundle")
    captionkit.train({"data": bundle, "epochs": 2, "seed": 1, **SIZES}, out=root / "xe", progress=False)
    return bundle, root / "xe"


def validation_cider(run):
    return [r["CIDEr-D"] for r in RunDirectory(run).read_metrics() if r["kind"] == "val"]


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_scst_raises_the_reward_from_a_cross_entropy_run(warm_start, tmp_path, baseline):
    bundle, xe = warm_start
    out = tmp_path / baseline
    captured = {}
    original = captionkit.scst.SelfCriticalSolver._step

    def recording_step(solver):
        captured["solver"] = solver
        return original(solver)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(captionkit.scst.SelfCriticalSolver, "_step", recording_step)
        captionkit.train({"data": bundle, "init_from": xe, "objective": "scst", "scst_baseline": baseline,
                          "epochs": 6, "lr": 1e-2, "seed": 1, **SIZES}, out=out, progress=False)
    rewards = np.array(captured["solver"].reward_history)
    thirds = [part.mean() for part in np.array_split(rewards, 3)]
    assert thirds[0] < thirds[2]
    assert len(validation_cider(out)) == 6 and np.isfinite(validation_cider(out)).all()
