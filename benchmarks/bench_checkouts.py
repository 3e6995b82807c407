"""The float32 compiled step of two checkouts of captionkit side by side: is a change slower than what it replaces?

    git worktree add ../base COMMIT && (cd ../base && python setup.py build_ext --inplace \\
        && for p in plugins/*/; do (cd $p && python setup.py build_ext --inplace); done)
    python benchmarks/bench_checkouts.py ../base .                  # rnn, lstm, gru: train N=50, N=200, greedy
    python benchmarks/bench_checkouts.py ../base . --cells lstm --rounds 8

Each checkout must have its compiled extensions (and its cell plugins') built in place. For every cell and task, one
worker process per checkout imports captionkit and the plugins from that checkout (PYTHONPATH; the worker says which
file it imported, and the driver stops if it is not the checkout's), builds the seed-sized float32 model on the
compiled backend (D=512, W=256, H=512, V=1004, T=16) and times a train step (loss, gradients, Adam as the solver
runs it) or greedy decoding of 50 captions x 30 steps, on ``--threads`` threads, in interleaved rounds
(benchmarks/_harness.py). Printed: each checkout's median time and the second's speed over the first (the median of
per-round ratios, so that both saw the same load). Only the public API that both checkouts share is used.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import ratio, serve, time_interleaved, worker_env  # noqa: E402
from _steps import D, H, MAX_LENGTH, W, captionkit_train_step, make_batch, vocabulary  # noqa: E402

TASKS = {"train N=50": ("train", 50), "train N=200": ("train", 200), "greedy 50": ("greedy", 50)}


def worker(cell_type, task, threads, warmup):
    import captionkit
    from captionkit import CaptioningRNN, parallel

    parallel.set_num_threads(threads)
    model = CaptioningRNN(vocabulary(), input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type,
                          dtype=np.float32, backend="cython", seed=0)
    kind, N = TASKS[task]
    features, captions = make_batch(N, np.random.RandomState(0))
    if kind == "train":
        run = captionkit_train_step(model, features, captions)
    else:
        def run():
            model.sample(features, max_length=MAX_LENGTH)
    serve(run, warmup, hello=lambda: {"captionkit": captionkit.__file__})


def checkout_path(path):
    """PYTHONPATH entries that put this checkout's captionkit and its plugins first."""
    root = Path(path).resolve()
    if not (root / "captionkit" / "__init__.py").is_file():
        raise SystemExit(f"{path}: not a captionkit checkout (no captionkit/__init__.py)")
    return [str(root)] + [str(p) for p in sorted((root / "plugins").glob("*/")) if p.is_dir()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", nargs="?", help="the checkout to compare against (e.g. the commit before a change)")
    parser.add_argument("second", nargs="?", help="the checkout with the change")
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("CELL", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.threads, args.warmup)
        return
    if not (args.first and args.second):
        parser.error("give two checkouts: FIRST SECOND")
    checkouts = {"first": checkout_path(args.first), "second": checkout_path(args.second)}
    print(f"first: {checkouts['first'][0]}; second: {checkouts['second'][0]}; {args.threads} threads, "
          f"median of {args.rounds} rounds x {args.block} iterations, interleaved\n")
    print("| cell | task | first ms | second ms | second's speed over first's |")
    print("|---|---|---:|---:|---:|")
    for cell_type in args.cells:
        for task in args.tasks:
            commands = {name: ["env", "PYTHONPATH=" + os.pathsep.join(paths), sys.executable,
                               os.path.abspath(__file__), "--worker", cell_type, task, "--threads", str(args.threads),
                               "--warmup", str(args.warmup)] for name, paths in checkouts.items()}
            records = time_interleaved(commands, worker_env(args.threads), args.rounds, args.block, 0.2)
            for name, paths in checkouts.items():
                imported = records[name]["hello"]["captionkit"]
                if not imported.startswith(paths[0] + os.sep):
                    raise SystemExit(f"the {name} worker imported {imported}, not the checkout {paths[0]}")
            first, second = (1e3 * np.median(records[name]["times"]) for name in checkouts)
            speed = ratio(records, "first", "second")  # first's time over second's: second's speed over first's
            print(f"| {cell_type} | {task} | {first:.1f} | {second:.1f} | {speed} |", flush=True)


if __name__ == "__main__":
    main()
