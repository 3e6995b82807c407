"""Compiled kernels against the numpy reference and PyTorch CPU: one training step and greedy sampling.

    python benchmarks/bench_kernels.py                      # the table of docs/benchmarks.md
    python benchmarks/bench_kernels.py --rounds 30 --json results.json --captions coco

What it measures, at the seed notebook's sizes (D=512, W=256, H=512, V=1004, T=16, float32):

- ``train N=25`` and ``train N=50``: one training step: loss and gradients of a minibatch
  (``CaptioningRNN.loss`` on the ``cython`` or ``numpy`` backend), then an Adam update of every parameter as the
  solver runs it: the fused, in-place ``captionkit.kernels.adam_update_many`` for ``compiled`` (one call for all
  parameters), ``captionkit.optim.adam`` for ``numpy``.
  PyTorch: nn.Embedding, nn.Linear projection, nn.RNN (tanh), nn.Linear scores, cross_entropy(ignore_index=<NULL>,
  summed and divided by N as captionkit's loss is), backward, torch.optim.Adam.
- ``greedy N=50``: greedy sampling of 50 captions of max_length 30 with no early stop (the vocabulary has no
  ``<END>``, so every caption runs all 30 steps in every implementation).

Each implementation runs in its own worker process (so BLAS and OpenMP thread pools never share a process and peak
memory is per implementation) with ``--threads`` threads (default 2). The workers take turns in rounds: each round
every worker times ``--block`` iterations, in a rotating order, after a pause that lets the previous worker's BLAS
threads stop spinning. Times are the median, min and max over all timed iterations after ``--warmup``; a ratio
between two implementations is the median over rounds of the ratio of their per-round medians, so load from other
processes on the machine hits both sides of a ratio alike. GFLOP/s counts the matrix products of the step (see
``flops``) and is compared with the sgemm peak measured first (2048x2048 float32 matmul, numpy's and scipy's BLAS,
the better one). Peak memory is the worker's peak resident set size (VmHWM), after setup and at the end.

Captions (``--captions``): ``full`` (default) has 16 real words in every row, so every position counts and the
FLOP count is exact for every implementation; ``coco`` has COCO-like rows (8 to 14 words, <END>, <NULL> padding),
where captionkit's compiled output layer skips the padded positions.
PyTorch is optional (``pip install torch``); without it its rows are left out.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from _harness import peak_rss_mib, serve, time_interleaved, torch_installed, worker_env
from _steps import (MAX_LENGTH, D, H, NULL, T, V, captionkit_model, captionkit_train_step, make_batch,
                    torch_greedy, torch_model, torch_train_step)
from bench_cells import flops

CONFIGS = {"train N=25": ("train", 25), "train N=50": ("train", 50), "greedy N=50": ("greedy", 50)}
IMPLEMENTATIONS = ("compiled", "numpy", "torch")


# ---------------------------------------------------------------------- implementations (run inside a worker)


def captionkit_runner(backend, task, N, captions_kind):
    model = captionkit_model("rnn", backend)
    features, captions = make_batch(N, np.random.RandomState(0), captions_kind)
    if task == "greedy":
        return lambda: model.sample(features, max_length=MAX_LENGTH)
    return captionkit_train_step(model, features, captions)


def torch_runner(task, N, captions_kind, threads):
    modules, initial = torch_model("rnn", threads)
    features, captions = make_batch(N, np.random.RandomState(0), captions_kind)
    if task == "greedy":
        return torch_greedy(modules, initial, features)
    return torch_train_step(modules, initial, features, captions)


def worker(implementation, config, captions_kind, threads, warmup):
    """Serve timing requests on stdin (see _harness.serve), reporting peak memory and the BLAS in use."""
    task, N = CONFIGS[config]
    if implementation == "torch":
        run = torch_runner(task, N, captions_kind, threads)
    else:
        run = captionkit_runner("cython" if implementation == "compiled" else "numpy", task, N, captions_kind)

    def hello():
        blas = blas_summary()
        if implementation == "compiled":
            from captionkit import kernels

            blas = f"kernels: {kernels.blas()}; loaded: {blas}"
        return {"rss_after_setup_mib": peak_rss_mib(), "blas": blas}

    serve(run, warmup, hello=hello, status=lambda: {"peak_rss_mib": peak_rss_mib()})


def blas_summary():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(
        f"{i['internal_api']} {i.get('version')} {i.get('architecture', '')} x{i['num_threads']} "
        f"({os.path.basename(i['filepath'])})"
        for i in threadpool_info()
    )


def profile_compiled(cell_type, N, repeats):
    """Median ms and GFLOP/s of each phase of a compiled float32 training step and of greedy sampling.

    The model cuts its batch into one shard per thread (captionkit.parallel); the phases of the loss are timed on
    the first shard alone, on this thread, then the whole loss (all shards side by side), Adam and sampling.
    """
    from captionkit import kernels, parallel

    model = captionkit_model(cell_type, "cython")
    p, cell = model.params, model.cell
    cell_params = {name: p[name] for name in model.cell_param_names}
    features, captions = make_batch(N, np.random.RandomState(0))
    shards = parallel.shards(N)
    shard = shards[0]
    n = shard.stop - shard.start
    captions_in, captions_out = captions[shard, :-1], captions[shard, 1:]
    mask = captions_out != NULL
    moments = {name: (np.zeros_like(value), np.zeros_like(value)) for name, value in p.items()}
    grads = model.loss(features, captions)[1]
    state = {}

    def phase_input():
        state["h0"], state["proj"] = kernels.affine_forward(features[shard], p["W_proj"], p["b_proj"])
        state["x"], state["embed"] = kernels.word_embedding_forward(captions_in, p["W_embed"])

    def phase_cell_forward():
        state["h"], state["cell"] = cell.forward(state["x"], state["h0"], cell_params)

    def phase_output():
        _, state["dh"], _, _ = kernels.temporal_softmax_affine_loss(state["h"], p["W_vocab"], p["b_vocab"],
                                                                    captions_out, mask, batch=N)

    def phase_cell_backward():
        state["dx"], state["dh0"], _ = cell.backward(state["dh"], state["cell"])

    def phase_input_backward():
        kernels.word_embedding_backward(state["dx"], state["embed"])
        kernels.affine_backward(state["dh0"], state["proj"], input_grad=False)

    def phase_loss():
        model.loss(features, captions)

    def phase_adam():
        kernels.adam_update_many(list(p.values()), [grads[name] for name in p], [moments[name][0] for name in p],
                                 [moments[name][1] for name in p], 1, map_shards=parallel.map_shards)  # as the solver

    def phase_greedy():
        model.sample(features, max_length=MAX_LENGTH)

    nt, recurrent = n * T, sum(p[name].size for name in ("Wx", "Wh") if name in p)  # multiply-adds per position
    phases = [
        (f"shard of {n}: projection + embedding", phase_input, 2 * n * D * H),
        (f"shard of {n}: {cell_type} forward", phase_cell_forward, 2 * nt * recurrent),
        (f"shard of {n}: output layer fwd+bwd", phase_output, 3 * 2 * nt * H * V),
        (f"shard of {n}: {cell_type} backward", phase_cell_backward, 2 * 2 * nt * recurrent),
        (f"shard of {n}: embedding + projection bwd", phase_input_backward, 2 * n * D * H),
        (f"loss and gradients, {N} rows in {len(shards)} shards on threads", phase_loss,
         2 * (2 * N * D * H + 3 * N * T * (recurrent + H * V))),
        ("adam (all parameters)", phase_adam, 0),
        (f"greedy sampling, {N} captions x {MAX_LENGTH} steps", phase_greedy,
         2 * (N * D * H + MAX_LENGTH * N * (recurrent + H * V))),
    ]
    lines = [f"| {cell_type} phase (N={N}, {parallel.get_num_threads()} threads) | median ms | GFLOP/s |",
             "|---|---:|---:|"]
    for name, run, work in phases:
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        lines.append(f"| {name} | {median * 1e3:.3f} | {work / median / 1e9:.0f} |" if work else
                     f"| {name} | {median * 1e3:.3f} | - |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- orchestration


def sgemm_peak(threads):
    """GFLOP/s of a 2048x2048 float32 matmul with numpy's and scipy's BLAS, measured in a fresh process."""
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure-peak"], env=worker_env(threads),
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def measure_peak(repeats=20):
    import scipy.linalg.blas

    a = np.random.RandomState(0).rand(2048, 2048).astype(np.float32)
    a_fortran = np.asfortranarray(a)  # scipy's wrapper would copy a C-ordered array first
    peak = {}
    products = {"numpy": lambda: a @ a, "scipy": lambda: scipy.linalg.blas.sgemm(1.0, a_fortran, a_fortran)}
    for name, product in products.items():
        product()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
        peak[name] = 2 * 2048**3 / best / 1e9
    print(json.dumps(peak))


def run_config(config, implementations, args):
    """Time every implementation on one config in interleaved rounds -> {implementation: record}."""
    commands = {impl: [sys.executable, os.path.abspath(__file__), "--worker", impl, "--config", config, "--captions",
                       args.captions, "--threads", str(args.threads), "--warmup", str(args.warmup)]
                for impl in implementations}
    timed = time_interleaved(commands, worker_env(args.threads), args.rounds, args.block, args.pause)
    return {impl: {"times": r["times"], "round_medians": r["round_medians"],
                   "peak_rss_mib": r["last"]["peak_rss_mib"], "rss_after_setup_mib": r["hello"]["rss_after_setup_mib"],
                   "blas": r["hello"]["blas"]}
            for impl, r in timed.items()}


def summarise(config, records, peak_gflops):
    task, N = CONFIGS[config]
    work = flops("rnn", task, N)
    floor = work / (peak_gflops * 1e9)  # seconds at the sgemm peak
    rows, ratios = [], []
    for impl, rec in records.items():
        t = np.array(rec["times"])
        median = float(np.median(t))
        rows.append({
            "config": config, "implementation": impl, "median_ms": median * 1e3, "min_ms": t.min() * 1e3,
            "max_ms": t.max() * 1e3, "iterations": len(t), "gflops": work / median / 1e9,
            "of_floor": floor / median, "peak_rss_mib": rec["peak_rss_mib"],
            "rss_after_setup_mib": rec["rss_after_setup_mib"], "blas": rec["blas"],
        })
    impls = list(records)
    for i, a in enumerate(impls):
        for b in impls[i + 1:]:
            per_round = np.array(records[b]["round_medians"]) / np.array(records[a]["round_medians"])
            ratios.append({"config": config, "faster": a, "slower": b, "ratio": float(np.median(per_round)),
                           "ratio_min": float(per_round.min()), "ratio_max": float(per_round.max())})
    return {"flops": work, "floor_ms": floor * 1e3, "rows": rows, "ratios": ratios}


TARGETS = (  # issue 3's targets: (config, what, threshold)
    ("train N=50", "torch / compiled", 1.3),
    ("train N=25", "torch / compiled", 1.8),
    ("greedy N=50", "torch / compiled", 1.5),
    ("train N=50", "of sgemm floor", 0.8),
    ("train N=50", "peak RSS numpy / compiled", 1.0),
)


def target_lines(results):
    lines = ["| target | measured | met |", "|---|---:|---|"]
    for config, what, threshold in TARGETS:
        if config not in results:
            continue
        rows = {row["implementation"]: row for row in results[config]["rows"]}
        ratios = {(r["slower"], r["faster"]): r["ratio"] for r in results[config]["ratios"]}
        if what == "of sgemm floor":
            value = rows["compiled"]["of_floor"]
        elif what.startswith("peak RSS"):
            value = rows["numpy"]["peak_rss_mib"] / rows["compiled"]["peak_rss_mib"] if "numpy" in rows else None
        else:
            value = ratios.get(("torch", "compiled"))
        if value is not None:
            lines.append(f"| {config}: {what} >= {threshold} | {value:.2f} | {'yes' if value >= threshold else 'no'} |")
    return lines


def markdown(results, peak, args):
    lines = [
        f"sgemm peak (2048x2048 float32, {args.threads} threads): {peak['best']:.0f} GFLOP/s "
        f"(numpy {peak['numpy']:.0f}, scipy {peak['scipy']:.0f}); captions: {args.captions}",
        "",
        "| config | implementation | median ms | min ms | max ms | GFLOP/s | of sgemm floor | peak RSS MiB "
        "(after setup) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for config, res in results.items():
        for row in res["rows"]:
            lines.append(
                f"| {config} ({res['flops'] / 1e9:.2f} GFLOP, floor {res['floor_ms']:.1f} ms) | "
                f"{row['implementation']} | {row['median_ms']:.2f} | {row['min_ms']:.2f} | {row['max_ms']:.2f} | "
                f"{row['gflops']:.0f} | {100 * row['of_floor']:.0f}% | {row['peak_rss_mib']:.0f} "
                f"({row['rss_after_setup_mib']:.0f}) |"
            )
    lines += ["", "| config | ratio (median over rounds) | min | max |", "|---|---:|---:|---:|"]
    for config, res in results.items():
        for r in res["ratios"]:
            lines.append(f"| {config} | {r['slower']} / {r['faster']} = {r['ratio']:.2f} | {r['ratio_min']:.2f} | "
                         f"{r['ratio_max']:.2f} |")
    return "\n".join(lines + [""] + target_lines(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), metavar="CONFIG",
                        help="which of: " + ", ".join(repr(c) for c in CONFIGS))
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--captions", choices=("full", "coco"), default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="rounds of interleaved blocks (default 10)")
    parser.add_argument("--block", type=int, default=3, help="timed iterations per worker per round (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations at a worker's start")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between blocks (BLAS threads settle)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--profile", action="store_true",
                        help="time the phases of the compiled step instead (one process, this process's threads)")
    parser.add_argument("--cell", default="rnn", help="the cell --profile times (default rnn)")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--measure-peak", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_peak:
        measure_peak()
        return
    if args.profile:
        for N in (25, 50):
            print(profile_compiled(args.cell, N, repeats=max(args.rounds * args.block, 20)), end="\n\n")
        return
    if args.worker:
        worker(args.worker, args.config, args.captions, args.threads, args.warmup)
        return
    implementations = [i for i in args.implementations if i != "torch" or torch_installed()]
    if args.rounds * args.block < 20:
        parser.error("--rounds x --block must be at least 20 timed iterations")
    peak = sgemm_peak(args.threads)
    peak["best"] = max(peak.values())
    results = {}
    for config in args.configs:
        results[config] = summarise(config, run_config(config, implementations, args), peak["best"])
    print(markdown(results, peak, args))
    print(f"\n{platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy "
          f"{np.__version__}; BLAS of the compiled worker: "
          f"{next((r['blas'] for r in results[args.configs[0]]['rows'] if r['implementation'] == 'compiled'), '-')}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"peak_gflops": peak, "args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
