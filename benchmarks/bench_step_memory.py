"""Memory of one training step against the model's own estimate (``CaptioningRNN.training_step_bytes``), which
``CaptioningSolver`` uses to refuse a ``batch_size`` that would not fit before allocating anything.

    python benchmarks/bench_step_memory.py                     # every registered gated cell, both backends, both dtypes
    python benchmarks/bench_step_memory.py --cells rnn --batch 8000 --hidden 512
    python benchmarks/bench_step_memory.py --regions 49 --attention soft --batch 500   # attention over a 7x7 grid

Each case runs in a fresh process: it builds the model, then makes one ``loss`` call (forward and backward) on
``--batch`` random captions and reports the growth of the process's peak resident memory during that call, per
caption, beside the estimate. The estimate must stay above the measurement (ratio < 1) for the refusal to be safe.
"""
import argparse
import json
import subprocess
import sys

_CHILD = """
import json, resource, sys
import numpy as np
from captionkit.model import CaptioningRNN
cell, backend, dtype, N, T, V, D, W, H, L, attention, A = json.loads(sys.argv[1])
words = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(V - 3)}}
model = CaptioningRNN(words, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell, backend=backend,
                      dtype=np.dtype(dtype).type, seed=0, regions=L, attention=attention, attention_dim=A)
rng = np.random.default_rng(0)
features = rng.standard_normal((N, D) if L is None else (N, L, D)).astype(dtype)
captions = rng.integers(3, V, size=(N, T)).astype(np.int32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model.loss(features, captions)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"measured": grown, "estimate": model.training_step_bytes(N, T)}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--backends", nargs="+", default=["numpy", "cython"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--batch", type=int, default=4000, help="captions in the step (large, so that the step's "
                                                                 "arrays dominate the peak)")
    parser.add_argument("--length", type=int, default=17, help="ids per caption (the COCO bundle's 17)")
    parser.add_argument("--vocab", type=int, default=1004)
    parser.add_argument("--input", type=int, default=512)
    parser.add_argument("--wordvec", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--regions", type=int, default=None, help="a grid of this many regions per image")
    parser.add_argument("--attention", default=None, help="an attention mechanism over the grid, e.g. soft")
    parser.add_argument("--attention-dim", type=int, default=None)
    args = parser.parse_args()
    print(f"one loss() on {args.batch} captions of {args.length} ids; V={args.vocab} D={args.input} "
          f"W={args.wordvec} H={args.hidden}"
          + (f" L={args.regions}" if args.regions else "") + (f" attention={args.attention}" if args.attention else ""))
    print(f"{'cell':<6} {'backend':<8} {'dtype':<8} {'measured':>12} {'estimate':>12} {'ratio':>6}  (KiB per caption)")
    for cell in args.cells:
        for backend in args.backends:
            for dtype in args.dtypes:
                case = [cell, backend, dtype, args.batch, args.length, args.vocab, args.input, args.wordvec,
                        args.hidden, args.regions, args.attention, args.attention_dim]
                done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(case)], capture_output=True,
                                      text=True, check=True)
                result = json.loads(done.stdout)
                per = {k: v / args.batch / 1024 for k, v in result.items()}
                print(f"{cell:<6} {backend:<8} {dtype:<8} {per['measured']:>12.1f} {per['estimate']:>12.1f} "
                      f"{result['measured'] / result['estimate']:>6.2f}")


if __name__ == "__main__":
    main()
