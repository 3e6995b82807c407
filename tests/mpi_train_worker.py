"""Run by tests/integration/test_distributed.py under ``mpiexec -n K``: train a tiny model with DistributedSolver.

Every rank saves its final parameters and loss history to ``OUT_DIR/rank<r>.npz``. ``--fail-rank R --fail-at I``
makes rank R fail at iteration I, by raising (``--fail-mode raise``) or by killing itself (``--fail-mode kill``);
``--seed-per-rank`` gives the ranks different minibatch seeds, which DistributedSolver must refuse.
"""
import argparse
import os
import signal
import sys

import numpy as np

from captionkit.data import load_coco_data
from captionkit.distributed import DistributedSolver, abort_on_error, world
from captionkit.model import CaptioningRNN

# Shared with the single-process reference in tests/integration/test_distributed.py.
MODEL_OPTIONS = {"wordvec_dim": 16, "hidden_dim": 24, "cell_type": "rnn", "seed": 3}
SOLVER_OPTIONS = {
    "update_rule": "adam",
    "optim_config": {"learning_rate": 5e-3},
    "lr_decay": 0.9,
    "batch_size": 25,
    "num_epochs": 3,
    "verbose": False,
}
MINIBATCH_SEED = 11


def build(data, dtype):
    """The model and solver options every rank (and the reference) uses."""
    model = CaptioningRNN(data["word_to_idx"], input_dim=data["train_features"].shape[1], dtype=dtype,
                          **MODEL_OPTIONS)
    return model, dict(SOLVER_OPTIONS, rng=np.random.RandomState(MINIBATCH_SEED))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("out_dir")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--fail-at", type=int, default=-1)
    parser.add_argument("--fail-mode", choices=("raise", "kill"), default="raise")
    parser.add_argument("--seed-per-rank", action="store_true", help="a mistake: seed each rank's sampler apart")
    args = parser.parse_args()

    me = world(required=True)

    def maybe_fail(solver):
        if me.rank == args.fail_rank and solver.iteration == args.fail_at:
            if args.fail_mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure at iteration {solver.iteration}")

    with abort_on_error(me, lambda message: print(message, file=sys.stderr, flush=True)):
        data = load_coco_data(args.bundle)
        model, options = build(data, np.dtype(args.dtype))
        if args.seed_per_rank:
            options["rng"] = np.random.RandomState(MINIBATCH_SEED + me.rank)
        solver = DistributedSolver(model, data, callback=maybe_fail, **options)
        solver.train()
    np.savez(os.path.join(args.out_dir, f"rank{me.rank}.npz"), loss_history=np.array(solver.loss_history),
             **model.params)


if __name__ == "__main__":
    main()
