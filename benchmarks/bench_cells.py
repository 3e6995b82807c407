"""Every recurrent cell, compiled and numpy, beside PyTorch's nn.RNN / nn.LSTM / nn.GRU on the CPU.

    python benchmarks/bench_cells.py                       # the cell rows of docs/benchmarks.md
    python benchmarks/bench_cells.py --cells lstm --tasks "train N=25" --rounds 20 --threads 1

Tasks, at the seed notebook's sizes (D=512, W=256, H=512, V=1004, T=16, float32):

- ``train N=25`` / ``train N=50``: one training step, as in benchmarks/bench_kernels.py: ``CaptioningRNN.loss`` with
  the cell (backend ``cython`` for "compiled", ``numpy`` for "numpy") and an Adam update of every parameter
  (``captionkit.kernels.adam_update_many`` / ``captionkit.optim.adam``, as the solver runs them). PyTorch:
  nn.Embedding, nn.Linear projection, nn.RNN / nn.LSTM / nn.GRU, nn.Linear scores, summed cross-entropy / N,
  backward, torch.optim.Adam.
- ``cell N=25``: the recurrent part alone, the cell's sequence forward and backward on random inputs.

A cell's "compiled" row runs its own compiled path when it has one (rnn: captionkit's kernels, lstm: the plugin's
extension) and its numpy path otherwise (gru), inside a model whose other layers are compiled.

GFLOP/s counts matrix products only (2 flops per multiply-add; the backward does two products per forward one): a
cell with G gate blocks does 2*N*T*G*(W+H)*H flops forward, so cells are comparable relative to their FLOPs. Each
implementation runs in its own worker process with --threads BLAS/OpenMP threads; workers take turns in interleaved
rounds after a pause, times are medians over all timed iterations, and a ratio is the median over rounds of the
per-round ratio, so load from other processes hits both sides of a ratio alike. PyTorch is optional.
"""
import argparse
import os
import sys

import numpy as np

from _harness import serve, time_interleaved, torch_installed, worker_env
from _steps import D, H, T, V, W, captionkit_model, captionkit_train_step, make_batch, torch_model, torch_train_step

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
TASKS = {"train N=25": ("train", 25), "train N=50": ("train", 50), "cell N=25": ("cell", 25)}
IMPLEMENTATIONS = ("compiled", "numpy", "torch")


def flops(cell_type, task, N):
    """Matrix-product flops of one training step, or of the cell's forward and backward alone."""
    recurrent = GATES[cell_type] * (W * H + H * H)  # per position
    if task == "cell":
        return 3 * 2 * N * T * recurrent
    return 2 * (2 * N * D * H + 3 * N * T * (recurrent + H * V))


# ---------------------------------------------------------------------- runners (inside a worker)
def captionkit_runner(cell_type, backend, task, N):
    rng = np.random.RandomState(0)
    model = captionkit_model(cell_type, backend)
    if task == "cell":
        cell, params = model.cell, {k: model.params[k] for k in model.cell_param_names}
        x, h0, dh = (rng.randn(*shape).astype(np.float32) for shape in ((N, T, W), (N, H), (N, T, H)))

        def run_cell():
            _, cache = cell.forward(x, h0, params)
            cell.backward(dh, cache)

        return run_cell
    return captionkit_train_step(model, *make_batch(N, rng))


def torch_runner(cell_type, task, N, threads):
    import torch

    rng = np.random.RandomState(0)
    modules, initial = torch_model(cell_type, threads)
    if task == "cell":
        recurrent = modules[2]
        x, h0, dh = (torch.from_numpy(rng.randn(*shape).astype(np.float32)) for shape in ((N, T, W), (1, N, H),
                                                                                          (N, T, H)))
        x.requires_grad_()
        h0.requires_grad_()

        def run_cell():
            out, _ = recurrent(x, initial(h0))
            out.backward(dh)

        return run_cell
    return torch_train_step(modules, initial, *make_batch(N, rng))


def worker(implementation, cell_type, task_name, threads, warmup):
    """Serve timing requests on stdin (see _harness.serve)."""
    task, N = TASKS[task_name]
    if implementation == "torch":
        run = torch_runner(cell_type, task, N, threads)
    else:
        run = captionkit_runner(cell_type, "cython" if implementation == "compiled" else "numpy", task, N)
    serve(run, warmup)


# ---------------------------------------------------------------------- driver
def run_config(cell_type, task_name, implementations, args):
    """Time every implementation in interleaved rounds -> {implementation: (all times, per-round medians)}."""
    commands = {impl: [sys.executable, os.path.abspath(__file__), "--worker", impl, "--cell", cell_type, "--task",
                       task_name, "--threads", str(args.threads), "--warmup", str(args.warmup)]
                for impl in implementations}
    timed = time_interleaved(commands, worker_env(args.threads), args.rounds, args.block, args.pause)
    return ({impl: r["times"] for impl, r in timed.items()}, {impl: r["round_medians"] for impl, r in timed.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"], choices=sorted(GATES))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                        help="which of: " + ", ".join(repr(t) for t in TASKS))
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of interleaved blocks (default 8)")
    parser.add_argument("--block", type=int, default=3, help="timed iterations per worker per round (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations at a worker's start")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between blocks (BLAS threads settle)")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.cell, args.task, args.threads, args.warmup)
        return
    implementations = [i for i in args.implementations if i != "torch" or torch_installed()]
    torch_version = ""
    if "torch" in implementations:
        import torch

        torch_version = f" {torch.__version__}"
    print(f"{args.threads} threads; median of {args.rounds} x {args.block} iterations after {args.warmup} warm-up")
    print()
    print("| cell | task | implementation | median ms | min ms | GFLOP/s | time / torch's (median over rounds) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for cell_type in args.cells:
        for task_name in args.tasks:
            times, medians = run_config(cell_type, task_name, implementations, args)
            work = flops(cell_type, *TASKS[task_name])
            for impl in implementations:
                t = np.array(times[impl])
                ratio = "-"
                if impl != "torch" and "torch" in medians:
                    ratio = f"{np.median(np.array(medians[impl]) / np.array(medians['torch'])):.2f}x"
                name = f"torch{torch_version} nn.{cell_type.upper()}" if impl == "torch" else f"captionkit {impl}"
                print(f"| {cell_type} | {task_name} ({work / 1e9:.2f} GFLOP) | {name} | {np.median(t) * 1e3:.1f} | "
                      f"{t.min() * 1e3:.1f} | {work / np.median(t) / 1e9:.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
