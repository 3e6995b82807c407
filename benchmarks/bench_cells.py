"""Every recurrent cell on every task, compiled and numpy, beside PyTorch's nn.RNN / nn.LSTM / nn.GRU on the CPU.

    python benchmarks/bench_cells.py                       # the cell tables of docs/benchmarks.md
    python benchmarks/bench_cells.py --cells lstm --tasks "train N=25" "greedy N=50" --rounds 20 --threads 1
    python benchmarks/bench_cells.py --precision bf16 --implementations compiled numpy   # bf16 on every task

Tasks, at the seed notebook's sizes (D=512, W=256, H=512, V=1004, T=16, float32):

- ``train N=25`` / ``train N=50``: one training step, as in benchmarks/bench_kernels.py: ``CaptioningRNN.loss`` with
  the cell and an Adam update of every parameter as the solver runs it (``optim.update_all``). PyTorch:
  nn.Embedding, nn.Linear projection, nn.RNN / nn.LSTM / nn.GRU, nn.Linear scores, summed cross-entropy / N,
  backward, torch.optim.Adam.
- ``greedy N=50``: greedy sampling of 50 captions x 30 steps (the vocabulary has no ``<END>``, so every caption runs
  all 30 steps). PyTorch: the same loop over its modules, one step of nn.RNN/LSTM/GRU at a time.
- ``beam N=50``: beam search, beam 3, 50 captions x 30 steps (``CaptioningRNN.sample(beam_size=3)``); no PyTorch row.
- ``evaluate``: ``captionkit.evaluation.evaluate`` on 100 images with 5 captions each: perplexity of the 500
  captions, greedy captions of the 100 images and their BLEU/CIDEr-D/ROUGE-L, as ``captionkit evaluate`` runs it.
- ``cell N=25``: the recurrent part alone, the cell's sequence forward and backward on random inputs.

"compiled" is the model on the ``cython`` backend, "numpy" on the ``numpy`` backend. "compiled-blas" (asked for with
--implementations) is the compiled backend with every product on the bound BLAS instead of the packed panels
(``_blas.use_panel(False, False)``): the path of a CPU without AVX-512, or OpenBLAS on its own kernels throughout.
A gated cell runs on the
recurrence engine: with its compiled pointwise part (rnn, lstm, gru) or its numpy one called back by the compiled
engine (gru_numpy: the test suite's GRU without its compiled part, installed from tests/plugins). ``mgu`` (also from
tests/plugins) does not fit the engine and runs its own numpy code inside the compiled model's shards.

GFLOP/s counts matrix products only (2 flops per multiply-add; the backward does two products per forward one), so
cells of different gate counts compare relative to their work. Each implementation runs in its own worker process
with --threads BLAS/OpenMP threads; workers take turns in interleaved rounds after a pause, times are medians over
all timed iterations, and a ratio is the median over rounds of the per-round ratio, so load from other processes
hits both sides of a ratio alike. Peak RSS is each worker's high-water mark. PyTorch is optional. With ``--precision
bf16`` captionkit's rows run every product on bfloat16 inputs (compiled: AMX or AVX512-BF16; numpy: the emulation,
captionkit.precision), so "compiled never slower than numpy" is checked at bf16 too; PyTorch's rows stay float32.
"""
import argparse
import os
import sys

import numpy as np

from _harness import peak_rss_mib, ratio, serve, time_interleaved, torch_installed, worker_env
from _steps import (MAX_LENGTH, TORCH_MODULES, D, H, T, V, W, captionkit_model, captionkit_train_step,
                    evaluation_data, make_batch, torch_greedy, torch_model, torch_train_step)

# Multiply-adds of the cell's own products per position, in units of (W + H) * H.
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_numpy": 3, "mgu": 2}
TASKS = {"train N=25": ("train", 25), "train N=50": ("train", 50), "greedy N=50": ("greedy", 50),
         "beam N=50": ("beam", 50), "evaluate": ("evaluate", 100), "cell N=25": ("cell", 25)}
DEFAULT_TASKS = [task for task in TASKS if task != "cell N=25"]
IMPLEMENTATIONS = ("compiled", "compiled-blas", "numpy", "torch")
DEFAULT_IMPLEMENTATIONS = ("compiled", "numpy", "torch")
BEAM = 3


def flops(cell_type, task, N):
    """Matrix-product flops of the task, or None where they are not the point (evaluation's metrics)."""
    recurrent = GATES[cell_type] * (W + H) * H  # per position
    if task == "cell":
        return 3 * 2 * N * T * recurrent
    if task == "train":
        return 2 * (2 * N * D * H + 3 * N * T * (recurrent + H * V))
    if task in ("greedy", "beam"):
        rows = N * (BEAM if task == "beam" else 1)
        return 2 * (N * D * H + MAX_LENGTH * rows * (recurrent + H * V))
    return None


def has_torch_row(cell_type, task):
    return cell_type in TORCH_MODULES and task in ("train", "greedy", "cell")


# ---------------------------------------------------------------------- runners (inside a worker)
def captionkit_runner(cell_type, backend, task, N, precision):
    from captionkit.evaluation import evaluate

    rng = np.random.RandomState(0)
    model = captionkit_model(cell_type, backend, precision)
    if task == "cell":
        cell, params = model.cell, {k: model.params[k] for k in model.cell_param_names}
        x, h0, dh = (rng.randn(*shape).astype(np.float32) for shape in ((N, T, W), (N, H), (N, T, H)))

        def run_cell():
            _, cache = cell.forward(x, h0, params)
            cell.backward(dh, cache)

        return run_cell
    if task == "evaluate":
        data = evaluation_data(rng, images=N)
        return lambda: evaluate(model, data)
    features, captions = make_batch(N, rng)
    if task == "greedy":
        return lambda: model.sample(features, max_length=MAX_LENGTH)
    if task == "beam":
        return lambda: model.sample(features, max_length=MAX_LENGTH, beam_size=BEAM)
    return captionkit_train_step(model, features, captions)


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
    features, captions = make_batch(N, rng)
    if task == "greedy":
        return torch_greedy(modules, initial, features)
    return torch_train_step(modules, initial, features, captions)


def worker(implementation, cell_type, task_name, threads, warmup, precision):
    """Serve timing requests on stdin (see _harness.serve), reporting the worker's peak memory."""
    task, N = TASKS[task_name]
    if implementation == "torch":
        run = torch_runner(cell_type, task, N, threads)
    else:
        run = captionkit_runner(cell_type, "numpy" if implementation == "numpy" else "cython", task, N, precision)
        if implementation == "compiled-blas":  # after the model is built, which binds the BLAS
            from captionkit._ext import _blas

            _blas.use_panel(False, False)
    serve(run, warmup, status=lambda: {"peak_rss_mib": peak_rss_mib()})


# ---------------------------------------------------------------------- driver
def run_config(cell_type, task_name, implementations, args):
    """Time every implementation in interleaved rounds -> {implementation: the harness's record}."""
    commands = {impl: [sys.executable, os.path.abspath(__file__), "--worker", impl, "--cell", cell_type, "--task",
                       task_name, "--threads", str(args.threads), "--warmup", str(args.warmup),
                       "--precision", args.precision] for impl in implementations}
    return time_interleaved(commands, worker_env(args.threads), args.rounds, args.block, args.pause)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=list(GATES), choices=list(GATES))
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, choices=list(TASKS), metavar="TASK",
                        help="which of: " + ", ".join(repr(t) for t in TASKS) + " (default: all but 'cell N=25')")
    parser.add_argument("--implementations", nargs="+", default=list(DEFAULT_IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="captionkit's products: fp32, or bf16 (compiled on AVX512-BF16/AMX, the numpy backend's "
                             "emulation); PyTorch's rows stay float32")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of interleaved blocks (default 8)")
    parser.add_argument("--block", type=int, default=3, help="timed iterations per worker per round (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations at a worker's start")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between blocks (BLAS threads settle)")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.cell, args.task, args.threads, args.warmup, args.precision)
        return
    from captionkit.cells import available_cells

    missing = sorted(set(args.cells) - set(available_cells()))
    if missing:
        print(f"not installed, left out: {', '.join(missing)} (tests/plugins/captionkit-testcells has gru_numpy and "
              "mgu)", file=sys.stderr)
    if args.precision == "bf16":  # bf16 runs the products the engine runs: a cell that computes its own cannot
        from captionkit.cells import GatedCell, get_cell

        own_products = sorted(c for c in set(args.cells) - set(missing) if not issubclass(get_cell(c), GatedCell))
        if own_products:
            print(f"not a GatedCell, so no bf16 products, left out: {', '.join(own_products)}", file=sys.stderr)
        missing += own_products
    with_torch = "torch" in args.implementations and torch_installed()
    torch_version = ""
    if with_torch:
        import torch

        torch_version = f" {torch.__version__}"
    print(f"{args.threads} threads; captionkit at precision {args.precision}; median of {args.rounds} x {args.block} "
          f"iterations after {args.warmup} warm-up")
    print()
    print("| cell | task | implementation | median ms | min ms | GFLOP/s | peak RSS MiB | time / torch's | "
          "time / numpy's |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for cell_type in [c for c in args.cells if c not in missing]:
        for task_name in args.tasks:
            task, N = TASKS[task_name]
            implementations = [i for i in args.implementations if i != "torch"]
            if with_torch and has_torch_row(cell_type, task):
                implementations.append("torch")
            records = run_config(cell_type, task_name, implementations, args)
            work = flops(cell_type, task, N)
            label = f"{task_name} ({work / 1e9:.2f} GFLOP)" if work else task_name
            for impl in implementations:
                t = np.array(records[impl]["times"])
                speed = f"{work / np.median(t) / 1e9:.0f}" if work else "-"
                name = f"torch{torch_version} nn.{TORCH_MODULES[cell_type]}" if impl == "torch" else \
                    f"captionkit {impl}"
                print(f"| {cell_type} | {label} | {name} | {np.median(t) * 1e3:.1f} | {t.min() * 1e3:.1f} | {speed} | "
                      f"{records[impl]['last']['peak_rss_mib']:.0f} | {ratio(records, impl, 'torch')} | "
                      f"{ratio(records, impl, 'numpy')} |", flush=True)


if __name__ == "__main__":
    main()
