"""One self-critical training iteration, captionkit's compiled model beside the same algorithm in PyTorch on the CPU,
and the CIDEr-D scoring throughput SCST relies on.

    python benchmarks/bench_scst.py                      # the SCST table of docs/benchmarks.md
    python benchmarks/bench_scst.py --cells lstm --rounds 10 --threads 1

An iteration, at the seed notebook's sizes (D=512, W=256, H=512, V=1004, T=16, float32), for N=50 images and K=5
samples per image: sample K captions per image at temperature 1 (T words each: the vocabulary has no ``<END>``, so
every caption runs all T steps and both sides do the same work), decode the greedy caption of each image (the
baseline), score the 300 captions with CIDEr-D against 5 references per image (captionkit.metrics.CiderD, the same
scorer on both sides), then the loss ``-sum_n A_n sum_t log p(w_{n,t})`` over the 250 sampled captions, its
backward and an Adam update of every parameter. captionkit: :class:`captionkit.scst.SelfCritical` and
``optim.update_all``. PyTorch: nn.Embedding, nn.Linear, nn.RNN / nn.LSTM, nn.Linear scores, a no-grad sampling
loop with torch.multinomial and a greedy loop, then one teacher-forced pass over the samples, per-caption
cross-entropy weighted by the advantages, backward, torch.optim.Adam.

Workers, interleaved rounds and the median per-round ratio are benchmarks/_harness.py's, as in bench_cells.py.
"""
import argparse
import os
import sys
import time

import numpy as np

from _harness import serve, time_interleaved, torch_installed, worker_env
from _steps import LEARNING_RATE, NULL, START, V, T, captionkit_model, make_batch, torch_model, vocabulary

N, K, REFERENCES = 50, 5, 5
IMPLEMENTATIONS = ("compiled", "torch")


def references(rng):
    """``{image: REFERENCES random captions of 8 to 14 words}`` for N images, as token tuples."""
    return {image: [tuple(rng.randint(2, V, size=rng.randint(8, 15)).tolist()) for _ in range(REFERENCES)]
            for image in range(N)}


def scorer_throughput(rounds=3):
    """Captions CIDEr-D scores per second against fixed references (the best of ``rounds`` passes of N * K)."""
    from captionkit.metrics import CiderD

    rng = np.random.RandomState(0)
    scorer = CiderD(list(references(rng).values()))
    captions = [tuple(rng.randint(2, V, size=T).tolist()) for _ in range(N * K)]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i, caption in enumerate(captions):
            scorer.score(i // K, caption)
        best = min(best, time.perf_counter() - start)
    return len(captions) / best


def captionkit_runner(cell_type):
    from captionkit import optim
    from captionkit.scst import SelfCritical

    rng = np.random.RandomState(0)
    model = captionkit_model(cell_type, "cython")
    features, _ = make_batch(N, rng)
    objective = SelfCritical(model, references(rng), samples=K, baseline="greedy", max_length=T)
    configs = {name: {"learning_rate": LEARNING_RATE} for name in model.params}
    sampling = np.random.default_rng(0)
    images = np.arange(N)

    def iteration():
        _, grads, _, _ = objective.loss(features, images, sampling)
        optim.update_all(optim.fused_adam, model.params, grads, configs)

    return iteration


def torch_runner(cell_type, threads):
    import torch
    import torch.nn.functional as F

    from captionkit.metrics import CiderD

    rng = np.random.RandomState(0)
    modules, initial = torch_model(cell_type, threads)
    embed, proj, recurrent, vocab = modules
    features = torch.from_numpy(make_batch(N, rng)[0])
    scorer = CiderD(list(references(rng).values()))
    optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def decode(image_features, sample):
        rows = image_features.shape[0]
        state = initial(proj(image_features).unsqueeze(0))
        words = torch.full((rows,), START, dtype=torch.long)
        out = torch.empty((rows, T), dtype=torch.long)
        for t in range(T):
            step_out, state = recurrent(embed(words).unsqueeze(1), state)
            scores = vocab(step_out[:, 0])
            words = torch.multinomial(F.softmax(scores, dim=1), 1, generator=generator)[:, 0] if sample \
                else scores.argmax(dim=1)
            out[:, t] = words
        return out

    def rewards(captions, images):
        return np.array([scorer.score(image, tuple(row)) for row, image in zip(captions.tolist(), images)])

    repeated = features.repeat_interleave(K, dim=0)

    def iteration():
        sampled = decode(repeated, sample=True)
        sampled_rewards = rewards(sampled, np.repeat(np.arange(N), K)).reshape(N, K)
        greedy_rewards = rewards(decode(features, sample=False), np.arange(N))
        advantages = torch.from_numpy((sampled_rewards - greedy_rewards[:, None]).ravel().astype(np.float32))
        captions = torch.cat([torch.full((N * K, 1), START, dtype=torch.long), sampled], dim=1)
        optimizer.zero_grad(set_to_none=True)
        hidden, _ = recurrent(embed(captions[:, :-1]), initial(proj(repeated).unsqueeze(0)))
        nll = F.cross_entropy(vocab(hidden).reshape(-1, V), captions[:, 1:].reshape(-1), ignore_index=NULL,
                              reduction="none").reshape(N * K, T).sum(dim=1)
        loss = (advantages * nll).sum() / (N * K)
        loss.backward()
        optimizer.step()

    return iteration


def worker(implementation, cell_type, threads, warmup):
    run = torch_runner(cell_type, threads) if implementation == "torch" else captionkit_runner(cell_type)
    serve(run, warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm"], choices=["rnn", "lstm"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of interleaved blocks (default 6)")
    parser.add_argument("--block", type=int, default=2, help="timed iterations per worker per round (default 2)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.cell, args.threads, args.warmup)

    implementations = [i for i in IMPLEMENTATIONS if i != "torch" or torch_installed()]
    if "torch" not in implementations:
        print("PyTorch is not installed: its column is left out", file=sys.stderr)
    print(f"CIDEr-D scoring: {scorer_throughput():,.0f} captions/s ({T} words each, {REFERENCES} references)")
    print("| cell | captionkit (ms) | PyTorch (ms) | PyTorch / captionkit |")
    print("|---|---|---|---|")
    for cell in args.cells:
        commands = {impl: [sys.executable, os.path.abspath(__file__), "--worker", impl, "--cell", cell,
                           "--threads", str(args.threads), "--warmup", str(args.warmup)] for impl in implementations}
        records = time_interleaved(commands, worker_env(args.threads), args.rounds, args.block, args.pause)
        ms = {impl: 1000 * np.median(records[impl]["times"]) for impl in implementations}
        if "torch" in records:
            per_round = np.array(records["torch"]["round_medians"]) / np.array(records["compiled"]["round_medians"])
            speedup = f"{np.median(per_round):.2f}x"
        else:
            speedup = "-"
        print(f"| {cell} | {ms['compiled']:.0f} | {ms.get('torch', float('nan')):.0f} | {speedup} |", flush=True)


if __name__ == "__main__":
    main()
