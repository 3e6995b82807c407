"""The default ``captionkit train`` run of each cell, started as a new user starts it: its total time, and how even
its iterations are, from the run's own metrics.jsonl.

    python benchmarks/bench_runs.py                        # rnn, lstm and gru, one run each
    python benchmarks/bench_runs.py --cells gru --runs 2 --keep runs/bench
    python benchmarks/bench_runs.py --precisions fp32 bf16    # each cell's default run at both, alternating

Each run is ``captionkit train --cell CELL --out DIR`` in a subprocess, with this process's environment (so by
default on all cores). An iteration's time is the difference between the ``elapsed`` of consecutive ``train``
records; the iteration after a validation or a checkpoint also holds that work, so those are reported apart. An
iteration above 3x the median is a stall: what two thread pools fighting over the cores look like.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def iteration_times(run_dir):
    """(step times, times of the iterations right after a validation or checkpoint) in seconds, from the run's
    metrics.jsonl, config.json and summary.json."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    every = config["checkpoint_every"] or summary["num_iterations"] // config["epochs"]  # None: once per epoch
    other_work = {r["iteration"] for r in records if r["kind"] == "val"}
    other_work |= set(range(every, summary["num_iterations"] + 1, every))
    steps, after, previous = {}, [], 0.0
    for record in (r for r in records if r["kind"] == "train"):
        if record["iteration"] - 1 in other_work:
            after.append(record["elapsed"] - previous)
        else:
            steps[record["iteration"]] = record["elapsed"] - previous
        previous = record["elapsed"]
    return steps, np.array(after), summary


def run(cell, precision, out):
    """One default run of ``cell`` at ``precision`` into ``out`` -> its figures."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from captionkit.cli import main; main()", "train", "--cell", cell,
                           "--precision", precision, "--out", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"captionkit train --cell {cell} --precision {precision} failed:\n{done.stderr}")
    steps, after, summary = iteration_times(out)
    times = np.array(list(steps.values()))
    median = float(np.median(times))
    return {"wall_s": wall, "iterations": len(steps) + len(after), "median_ms": median * 1e3,
            "p99_ms": float(np.percentile(times, 99)) * 1e3, "max_ms": float(times.max()) * 1e3,
            "over_3x": sorted(it for it, t in steps.items() if t > 3 * median), "after_max_ms": float(after.max()) * 1e3,
            "metrics": summary["val_metrics"]}


def describe(iterations):
    """'none', or how many and which (the first few)."""
    if not iterations:
        return "none"
    listed = ", ".join(map(str, iterations[:5])) + (", ..." if len(iterations) > 5 else "")
    return f"{len(iterations)} (iteration {listed})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--runs", type=int, default=1, help="runs of each cell (default 1)")
    parser.add_argument("--keep", help="write the run directories here instead of a temporary folder")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="--precision of the runs; several alternate run by run (default fp32)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="captionkit-bench-runs-"))
    print("| cell | precision | wall s | iterations | median ms | p99 ms | max ms | iterations above 3x the median | "
          "max after "
          "validation or checkpoint, ms | val BLEU-4 | val CIDEr-D |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cell in args.cells:
        for i in range(args.runs):
            for precision in args.precisions:
                r = run(cell, precision, root / f"{cell}-{precision}-{i}")
                print(f"| {cell} | {precision} | {r['wall_s']:.1f} | {r['iterations']} | {r['median_ms']:.1f} | "
                      f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {describe(r['over_3x'])} | {r['after_max_ms']:.0f} | "
                      f"{r['metrics']['BLEU-4']:.3f} | {r['metrics']['CIDEr-D']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
