"""Soft attention over a 7x7 grid against the pooled model, at the seed sizes (D=512, W=256, H=512, V=1004, T=16,
attention size A=512, L=49 regions), float32, in one process, interleaved, so the ratios share the machine's load.

    python benchmarks/bench_attention.py                  # rnn, lstm and gru at N=25 and 50
    python benchmarks/bench_attention.py --cells lstm --batches 50 --repeats 7

Times one train step (``CaptioningRNN.loss`` and Adam, as the solver runs it) and greedy decoding of N captions x
30 steps. Attention models run their numpy reference today (the engine path of issue #20 is not written yet), so
this table says what the compiled attention path has to win back; the pooled rows run on the compiled backend.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _steps import D, H, MAX_LENGTH, W, captionkit_train_step, make_batch, vocabulary  # noqa: E402

L, A = 49, 512


def build(cell_type, attention):
    from captionkit import CaptioningRNN

    kwargs = dict(regions=L, attention="soft", attention_dim=A) if attention else {}
    return CaptioningRNN(vocabulary(), input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type,
                         dtype=np.float32, backend="numpy" if attention else "cython", seed=0, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--batches", nargs="+", type=int, default=[25, 50])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    print(f"{'cell':<5} {'N':>3} {'task':<12} {'pooled (s)':>11} {'attention (s)':>14} {'ratio':>6}")
    for cell in args.cells:
        models = {kind: build(cell, kind == "attention") for kind in ("pooled", "attention")}
        for N in args.batches:
            features, captions = make_batch(N, rng)
            grid = np.repeat(features[:, None, :], L, axis=1) + 0.1 * rng.randn(N, L, D).astype(np.float32)
            inputs = {"pooled": features, "attention": grid}
            tasks = {
                "train step": {k: captionkit_train_step(m, inputs[k], captions) for k, m in models.items()},
                "greedy x30": {k: (lambda m=m, f=inputs[k]: m.sample(f, max_length=MAX_LENGTH))
                               for k, m in models.items()},
            }
            for task, runs in tasks.items():
                times = {k: [] for k in runs}
                for run in runs.values():
                    run()  # warm up
                for _ in range(args.repeats):
                    for kind, run in runs.items():
                        start = time.perf_counter()
                        run()
                        times[kind].append(time.perf_counter() - start)
                pooled, attended = (statistics.median(times[k]) for k in ("pooled", "attention"))
                print(f"{cell:<5} {N:>3} {task:<12} {pooled:>11.4f} {attended:>14.4f} {attended / pooled:>6.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
