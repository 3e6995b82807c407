"""Time a training step's recurrent part (sequence forward + backward) for every cell and path, beside PyTorch.

    python benchmarks/bench_cells.py                        # the default sizes, float32, markdown table
    python benchmarks/bench_cells.py --sizes 25x16x256x512 --repeat 7

Each row is the best of --repeat runs (after one warm-up) of forward and backward on random inputs of size
N x T x W x H. GFLOP/s counts the matrix products only: a cell with G gate blocks does 2*N*T*(W+H)*G*H flops
forward and twice that backward, so rows of different cells are comparable "relative to their FLOPs". PyTorch
(nn.RNN with tanh, nn.LSTM, nn.GRU on the CPU) is measured when it is installed; it is never a dependency.
"""
import argparse
import os
import time

import numpy as np

from captionkit.backend import compiled_available
from captionkit.cells import available_cells, get_cell

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def best_time(run, repeat):
    run()  # warm-up: first-touch allocation, lazy imports, BLAS thread start-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def captionkit_runner(cell_type, backend, N, T, W, H, dtype, rng):
    cell = get_cell(cell_type)(backend=backend)
    params = {k: v.astype(dtype) for k, v in cell.init_params(W, H, rng).items()}
    x = rng.standard_normal((N, T, W)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    dh = rng.standard_normal((N, T, H)).astype(dtype)

    def run():
        _, cache = cell.forward(x, h0, params)
        cell.backward(dh, cache)

    return run


def torch_runner(cell_type, N, T, W, H, dtype, rng):
    import torch

    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell_type]
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    net = module(W, H, batch_first=True).to(torch_dtype)
    x = torch.from_numpy(rng.standard_normal((N, T, W)).astype(dtype)).requires_grad_()
    h0 = torch.from_numpy(rng.standard_normal((1, N, H)).astype(dtype)).requires_grad_()
    state = (h0, torch.zeros_like(h0)) if cell_type == "lstm" else h0
    dh = torch.from_numpy(rng.standard_normal((N, T, H)).astype(dtype))

    def run():
        out, _ = net(x, state)
        out.backward(dh)

    return run


def rows_for(size, dtype, repeat):
    N, T, W, H = size
    rng = np.random.RandomState(0)
    try:
        import torch
    except ImportError:
        torch = None
    for cell_type in sorted(GATES):
        if cell_type not in available_cells():
            continue
        flops = 3 * 2 * N * T * (W + H) * GATES[cell_type] * H
        paths = ["numpy"]
        cls = get_cell(cell_type)
        # The built-in rnn's compiled path comes with captionkit's kernels; a plugin's with the plugin.
        if cls.compiled and (cell_type != "rnn" or compiled_available()):
            paths.append("cython")
        for path in paths:
            seconds = best_time(captionkit_runner(cell_type, path, N, T, W, H, dtype, rng), repeat)
            yield cell_type, f"captionkit {path}", seconds, flops
        if torch is not None:
            seconds = best_time(torch_runner(cell_type, N, T, W, H, dtype, rng), repeat)
            yield cell_type, f"torch {torch.__version__} nn.{cell_type.upper()}", seconds, flops


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["25x16x256x512", "100x16x256x512"],
                        help="NxTxWxH sizes to time (default: the overfit run's batch, and a training batch)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    dtype = np.dtype(args.dtype).type
    try:
        import torch

        # Same thread count on both sides: OPENBLAS_NUM_THREADS (read by numpy's BLAS at start-up) sets torch's too.
        if os.environ.get("OPENBLAS_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OPENBLAS_NUM_THREADS"]))
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = "-"
    print(f"# {args.dtype}, best of {args.repeat}; {os.cpu_count()} CPUs; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, torch threads {torch_threads}")
    print("| N x T x W x H | cell | implementation | forward + backward (ms) | GFLOP/s |")
    print("|---|---|---|---:|---:|")
    for text in args.sizes:
        size = tuple(int(v) for v in text.lower().split("x"))
        if len(size) != 4 or min(size) < 1:
            parser.error(f"--sizes takes NxTxWxH with positive integers, got {text!r}")
        for cell_type, impl, seconds, flops in rows_for(size, dtype, args.repeat):
            print(f"| {text} | {cell_type} | {impl} | {seconds * 1e3:.1f} | {flops / seconds / 1e9:.1f} |", flush=True)


if __name__ == "__main__":
    main()
