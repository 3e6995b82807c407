"""The large matrix products of a training step on the kernels' OpenBLAS and on captionkit's packed panels, one
thread, for each kernel set OpenBLAS is told to use: what decides where captionkit sends those products.

    python benchmarks/bench_products.py                        # OpenBLAS's own choice and OPENBLAS_CORETYPE=Haswell
    python benchmarks/bench_products.py --cores Haswell SkylakeX

Shapes are a shard of 25 rows at the seed notebook's sizes (T=16, so 400 rows of a sequence; W=256, H=512,
V=1004), for an LSTM's gates (4H = 2048). Each product is timed through ``captionkit.kernels.affine_forward`` /
``affine_backward`` (with ``_blas.use_panel`` switching the products between OpenBLAS and the panels), best of 5
medians of 20 calls; the panel figures include packing B, which every such call does. The two "and ... beside it"
rows are ``affine_backward`` making both products, counted together.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# name: (rows of A, columns, depth, which kernel call makes it)
SHAPES = {
    "input projection x Wx, 400x256 @ 256x2048": (400, 2048, 256, "forward"),
    "dWx = X^T dA, 256x400 @ 400x2048": (256, 2048, 400, "weights"),
    "dWh = H^T dA, 512x400 @ 400x2048": (512, 2048, 400, "weights"),
    "dx = dA Wx^T (and dWx beside it), 400x2048 @ 2048x256": (400, 256, 2048, "input"),
    "scores h W_vocab, 400x512 @ 512x1004": (400, 1004, 512, "forward"),
    "dW_vocab = h^T dS, 512x400 @ 400x1004": (512, 1004, 400, "weights"),
    "dh = dS W_vocab^T (and dW_vocab beside it), 400x1004 @ 1004x512": (400, 512, 1004, "input"),
}


def measure():
    """GFLOP/s of each shape on BLAS and on the panels, in this process (a worker)."""
    from captionkit import kernels
    from captionkit._ext import _blas

    rng = np.random.default_rng(0)
    results = {}
    for name, (m, n, k, which) in SHAPES.items():
        if which == "forward":  # x (m, k) @ w (k, n)
            x, w = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
            call = lambda x=x, w=w: kernels.affine_forward(x, w, np.zeros(w.shape[1], np.float32))  # noqa: E731
        elif which == "weights":  # dw = x^T (m, k) @ dout (k, n)
            x, dout = rng.standard_normal((k, m), np.float32), rng.standard_normal((k, n), np.float32)
            w = np.zeros((m, n), np.float32)
            call = lambda x=x, w=w, dout=dout: kernels.affine_backward(dout, (x, w, None), input_grad=False)  # noqa
        else:  # dx = dout (m, k) @ w^T, w (n, k); affine_backward also makes dw = x^T dout (n, k), as many flops
            x, w = np.zeros((m, n), np.float32), rng.standard_normal((n, k), np.float32)
            dout = rng.standard_normal((m, k), np.float32)
            call = lambda x=x, w=w, dout=dout: kernels.affine_backward(dout, (x, w, None))  # noqa: E731
        row = {}
        for path, large in (("blas", False), ("panels", True)):
            previous = _blas.use_panel(True, large)
            try:
                best = float("inf")
                for _ in range(5):
                    call()
                    times = []
                    for _ in range(20):
                        start = time.perf_counter()
                        call()
                        times.append(time.perf_counter() - start)
                    best = min(best, float(np.median(times)))
            finally:
                _blas.use_panel(*previous)
            row[path] = (4 if which == "input" else 2) * m * n * k / best / 1e9
        results[name] = row
    return {"blas": kernels.blas(), "default": _blas.panel_use()[1], "results": results}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", nargs="+", default=["", "Haswell"],
                        help="OPENBLAS_CORETYPE values to run under ('' lets OpenBLAS choose)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure()))
        return
    runs = {}
    for core in args.cores:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "CAPTIONKIT_NUM_THREADS": "1"}
        env.pop("OPENBLAS_CORETYPE", None)
        if core:
            env["OPENBLAS_CORETYPE"] = core
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker"], capture_output=True, text=True,
                              env=env, check=True)
        runs[core or "OpenBLAS's choice"] = json.loads(done.stdout)
    header = " | ".join(f"{label}: OpenBLAS | panels" for label in runs)
    print(f"| product (one thread, float32, GFLOP/s) | {header} |")
    print("|---|" + "---:|---:|" * len(runs))
    for name in SHAPES:
        cells = " | ".join(f"{run['results'][name]['blas']:.0f} | {run['results'][name]['panels']:.0f}"
                           for run in runs.values())
        print(f"| {name} | {cells} |")
    print()
    for label, run in runs.items():
        print(f"- {label}: {run['blas']}; captionkit sends these products to "
              f"{'the panels' if run['default'] else 'OpenBLAS'}")


if __name__ == "__main__":
    main()
