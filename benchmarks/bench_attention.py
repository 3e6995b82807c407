"""Soft attention over a grid of image regions: its speed against PyTorch and the pooled model, whether it
captions truer than the pooled model at equal training time, and whether its maps peak on the named shapes.

    python benchmarks/bench_attention.py                                   # speed: rnn, lstm, gru at N=25, 50
    python benchmarks/bench_attention.py --cells lstm --batches 50 --rounds 5
    python benchmarks/bench_attention.py --parts truth peaks --data grid4 --seconds 300
    python benchmarks/bench_attention.py --parts peaks --run runs/rnn-soft-20260101-120000
    python benchmarks/bench_attention.py --parts peaks --run runs/rnn-soft-20260101-120000/checkpoints/ckpt-00000400.npz

Three parts, each runnable alone (``--parts``):

- ``speed``: at the seed sizes with a 7x7 grid (D=512, W=256, H=512, V=1004, T=16, L=49 regions, attention size
  A=512), float32: one train step at each N of ``--batches`` (``CaptioningRNN.loss`` and Adam, as the solver runs
  it) and greedy decoding of 50 captions x 30 steps. Rows: captionkit's attention model on the ``numpy`` backend
  and on the ``cython`` one (the compiled engine once it runs attention; until then the numpy reference again),
  the pooled model on the compiled backend, and PyTorch's model of the same equations: the decoder of the common
  "Show, Attend and Tell" tutorial (sgrvinod's DecoderWithAttention: an nn.LSTMCell loop over steps with the
  attention and its sigmoid gate; nn.RNNCell and nn.GRUCell for rnn and gru), tanh scores as captionkit's (the
  tutorial's ReLU costs the same), ``V Ua`` hoisted out of the loop as captionkit does, cross-entropy summed / N
  plus the doubly stochastic penalty, torch.optim.Adam. Each implementation runs in its own worker process with
  ``--threads`` threads, in interleaved rounds (benchmarks/_harness.py); a ratio is the median of per-round ratios.
  The issue's targets: train step 1.5x faster than PyTorch's (time ratio <= 0.67), greedy 2x (<= 0.5), compiled
  never slower than numpy.
- ``truth``: on a grid bundle of the built-in scenes (``--data``: made with ``captionkit data synth DIR --grid K``,
  or written there by this script when DIR does not exist), an attention model and a pooled model (the same cell
  and the default ``captionkit train`` sizes) each train for ``--seconds`` of wall time, then caption the validation
  images greedily: the share of captions true of their scene (``captionkit.synthetic.is_true``) and CIDEr-D.
- ``peaks``: the attention model of ``truth`` (trained here for ``--seconds`` when ``truth`` is not run), or the
  model of ``--run``, captions the validation scenes greedily; for every word naming a colour or shape of its scene,
  does the argmax region of that step's attention hold the shape (``captionkit.synthetic.grid_coverage``)? Printed
  beside the hit rate of a peak placed at random (the mean share of regions holding the shape) and of the best
  placement that ignores the picture (the region shapes cover most often). The issue's target: at least 80%.
  Then the same by word kind (colour, shape noun, the second word of "plus sign"), by how many regions the named
  shape covers and by the word's position in the caption, each with the mean attention mass on the shape's regions
  (beside a uniform map's, the random region's rate), and the shares of misses whose peak is in a region next to
  (8-neighbourhood) one holding the shape and whose peak holds another shape of the scene.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import ratio, serve, time_interleaved, torch_installed, worker_env  # noqa: E402
from _steps import D, H, LEARNING_RATE, MAX_LENGTH, NULL, START, V, W, captionkit_train_step, make_batch, \
    vocabulary  # noqa: E402

L, A = 49, 512
GREEDY_CAPTIONS = 50
PARTS = ("speed", "truth", "peaks")
IMPLEMENTATIONS = ("attention numpy", "attention compiled", "pooled compiled", "torch")
TORCH_CELLS = {"rnn": "RNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}
ATTENTION_PENALTY = 1.0


# ---------------------------------------------------------------------- speed: the workers' models
def grid_batch(N, rng):
    """Features (N, L, D) float32, regions alike but not equal, and full captions (N, T+1) from <START>."""
    features, captions = make_batch(N, rng)
    grid = np.repeat(features[:, None, :], L, axis=1) + 0.1 * rng.randn(N, L, D).astype(np.float32)
    return grid, captions


def captionkit_runner(implementation, cell_type, task, N):
    from captionkit import CaptioningRNN

    attention = implementation.startswith("attention")
    backend = "numpy" if implementation == "attention numpy" else "cython"
    kwargs = dict(attention="soft", attention_dim=A) if attention else {}
    model = CaptioningRNN(vocabulary(), input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, regions=L,
                          dtype=np.float32, backend=backend, seed=0, **kwargs)
    features, captions = grid_batch(N, np.random.RandomState(0))
    if task == "greedy":
        return lambda: model.sample(features, max_length=MAX_LENGTH)
    return captionkit_train_step(model, features, captions)


def torch_decoder(cell_type):
    """The tutorial's attention decoder in torch, for ``cell_type``; float32, seeded."""
    import torch
    from torch import nn

    class AttentionDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, W)
            self.init_h = nn.Linear(D, H)
            self.init_c = nn.Linear(D, H) if cell_type == "lstm" else None
            self.encoder_att = nn.Linear(D, A, bias=False)   # keys = V Ua
            self.decoder_att = nn.Linear(H, A)               # h Wa + ba
            self.full_att = nn.Linear(A, 1, bias=False)      # . wa
            self.f_beta = nn.Linear(H, D)                    # the gate
            self.cell = getattr(nn, TORCH_CELLS[cell_type])(W + D, H)  # [x, g] (Wx; Wz): a_t = x Wx + g Wz + b
            self.fc = nn.Linear(H, V)

        def start(self, regions):
            mean = regions.mean(dim=1)
            h = self.init_h(mean)
            state = (h, self.init_c(mean)) if self.init_c is not None else h
            return state, self.encoder_att(regions)

        def step(self, x, regions, keys, state):
            """One word: the glimpse from h_{t-1}, then the cell -> (state, alpha (N, L))."""
            h = state[0] if isinstance(state, tuple) else state
            scores = self.full_att(torch.tanh(keys + self.decoder_att(h)[:, None, :])).squeeze(2)
            alpha = torch.softmax(scores, dim=1)
            glimpse = torch.sigmoid(self.f_beta(h)) * (alpha[:, :, None] * regions).sum(dim=1)
            return self.cell(torch.cat([x, glimpse], dim=1), state), alpha

    torch.manual_seed(0)
    return AttentionDecoder()


def torch_runner(cell_type, task, N, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    decoder = torch_decoder(cell_type)
    grid, captions = grid_batch(N, np.random.RandomState(0))
    regions, captions = torch.from_numpy(grid), torch.from_numpy(captions).long()
    if task == "greedy":
        @torch.no_grad()
        def greedy():
            state, keys = decoder.start(regions)
            words = torch.full((N,), START, dtype=torch.long)
            out = torch.empty((N, MAX_LENGTH), dtype=torch.long)
            for t in range(MAX_LENGTH):
                state, _ = decoder.step(decoder.embed(words), regions, keys, state)
                words = decoder.fc(state[0] if isinstance(state, tuple) else state).argmax(dim=1)
                out[:, t] = words
            return out

        return greedy
    optimizer = torch.optim.Adam(decoder.parameters(), lr=LEARNING_RATE)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        state, keys = decoder.start(regions)
        x = decoder.embed(captions[:, :-1])
        hidden, alphas = [], []
        for t in range(x.shape[1]):
            state, alpha = decoder.step(x[:, t], regions, keys, state)
            hidden.append(state[0] if isinstance(state, tuple) else state)
            alphas.append(alpha)
        scores = decoder.fc(torch.stack(hidden, dim=1))
        loss = F.cross_entropy(scores.reshape(-1, V), captions[:, 1:].reshape(-1), ignore_index=NULL,
                               reduction="sum") / N
        loss = loss + ATTENTION_PENALTY * ((1 - torch.stack(alphas, dim=1).sum(dim=1)) ** 2).sum() / N
        loss.backward()
        optimizer.step()

    return train_step


def worker(implementation, cell_type, task, N, threads, warmup):
    if implementation == "torch":
        run = torch_runner(cell_type, task, N, threads)
    else:
        run = captionkit_runner(implementation, cell_type, task, N)
    serve(run, warmup)


def speed(args):
    implementations = [i for i in args.implementations if i != "torch" or torch_installed()]
    if "torch" in args.implementations and "torch" not in implementations:
        print("torch is not installed: no PyTorch rows (pip install torch)", file=sys.stderr)
    version = ""
    if "torch" in implementations:
        import torch

        version = f" {torch.__version__}"
    print(f"speed: D={D} W={W} H={H} V={V} L={L} A={A}, float32, {args.threads} threads; median of {args.rounds} x "
          f"{args.block} iterations after {args.warmup} warm-up")
    print()
    print("| cell | task | implementation | median ms | min ms | time / torch's | time / numpy's |")
    print("|---|---|---|---:|---:|---:|---:|")
    tasks = [("train", N) for N in args.batches] + [("greedy", GREEDY_CAPTIONS)]
    for cell_type in args.cells:
        for task, N in tasks:
            commands = {impl: [sys.executable, os.path.abspath(__file__), "--worker", impl, "--cell", cell_type,
                               "--task", task, "--n", str(N), "--threads", str(args.threads),
                               "--warmup", str(args.warmup)] for impl in implementations}
            records = time_interleaved(commands, worker_env(args.threads), args.rounds, args.block, args.pause)
            label = f"train N={N}" if task == "train" else f"greedy {N} x {MAX_LENGTH}"
            for impl in implementations:
                times = np.array(records[impl]["times"])
                name = f"torch{version} nn.{TORCH_CELLS[cell_type]} loop" if impl == "torch" else \
                    f"captionkit {impl}"
                print(f"| {cell_type} | {label} | {name} | {np.median(times) * 1e3:.1f} | {times.min() * 1e3:.1f} | "
                      f"{ratio(records, impl, 'torch')} | {ratio(records, impl, 'attention numpy')} |", flush=True)


# ---------------------------------------------------------------------- truth and peaks: trained models
def grid_bundle(args):
    """The grid bundle's directory, written first when it does not exist (``--data``; default: a temporary one)."""
    from captionkit.synthetic import write_bundle

    directory = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-attention-")) / "grid"
    if not directory.exists():
        start = time.perf_counter()
        write_bundle(directory, num_train=args.num_train, num_val=args.num_val, grid=args.grid)
        print(f"wrote {directory}: {args.num_train} + {args.num_val} scenes on a {args.grid}x{args.grid} grid in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return directory


def val_scenes(directory):
    from captionkit.synthetic.bundle import SCENES_FILE
    from captionkit.synthetic.scenes import Scene

    path = Path(directory) / SCENES_FILE
    if not path.is_file():
        raise SystemExit(f"{directory}: no {SCENES_FILE}; truth and peaks need the built-in scenes "
                         "(captionkit data synth DIR --grid K)")
    return [Scene.from_dict(scene) for scene in json.loads(path.read_text())["val"]]


class _TimeUp(Exception):
    """Raised from the solver's callback when the training budget is spent."""


def train_for(model, data, seconds):
    """Train ``model`` with the default `captionkit train` optimiser settings for ``seconds`` of wall time ->
    (iterations, seconds taken)."""
    from captionkit import CaptioningSolver
    from captionkit.options import OPTIONS

    defaults = {option.name: option.default for option in OPTIONS}
    start = time.perf_counter()

    def stop_when_spent(solver):
        if time.perf_counter() - start >= seconds:
            raise _TimeUp

    solver = CaptioningSolver(model, data, update_rule=defaults["update_rule"],
                              optim_config={"learning_rate": defaults["lr"]}, lr_decay=defaults["lr_decay"],
                              batch_size=defaults["batch_size"], num_epochs=10**6, verbose=False,
                              rng=np.random.RandomState(0), callback=stop_when_spent)
    try:
        solver.train()
    except _TimeUp:
        pass
    return solver.iteration, time.perf_counter() - start


def build_model(data, cell_type, attention):
    from captionkit import CaptioningRNN
    from captionkit.options import OPTIONS

    defaults = {option.name: option.default for option in OPTIONS}
    regions, dim = data["train_features"].shape[1:]
    kwargs = dict(attention="soft", attention_penalty=defaults["attention_penalty"]) if attention else {}
    return CaptioningRNN(data["word_to_idx"], input_dim=dim, wordvec_dim=defaults["wordvec_dim"],
                         hidden_dim=defaults["hidden_dim"], cell_type=cell_type, regions=regions, seed=0, **kwargs)


def truth(args, data, scenes):
    """Train an attention and a pooled model for the same time; print their truth share and CIDEr-D -> the
    attention model."""
    from captionkit.evaluation import caption_text, evaluate, generate_captions
    from captionkit.synthetic import is_true

    images = min(args.eval_images, len(scenes))
    print(f"truth: {args.cell} on {args.data or 'a new grid bundle'} ({data['train_features'].shape[1]} regions), "
          f"{args.seconds:g} s of training each, greedy captions of {images} validation images")
    print()
    print("| model | backend | iterations | s / iteration | captions true | CIDEr-D |")
    print("|---|---|---:|---:|---:|---:|")
    models = {}
    for kind in ("attention", "pooled"):
        model = build_model(data, args.cell, kind == "attention")
        iterations, spent = train_for(model, data, args.seconds)
        captions = generate_captions(model, data["val_features"][:images], data["val_captions"].shape[1] - 1)
        true = np.mean([is_true(caption_text(row, data["idx_to_word"]).split(), scene)
                        for row, scene in zip(captions, scenes)])
        cider = evaluate(model, data, "val", max_images=images)["CIDEr-D"]
        print(f"| {kind} | {model.backend} | {iterations} | {spent / max(iterations, 1):.3f} | {true:.1%} | "
              f"{cider:.3f} |", flush=True)
        models[kind] = model
    print()
    return models["attention"]


# Rows of the peaks breakdown: (label, which words), by word kind, by how many grid regions the named shape
# covers (a shape in one region leaves one region to find; a large one many), and by position in the caption.
BREAKDOWN_ROWS = (
    ("colour word", lambda w: w["kind"] == "colour"),
    ("shape noun (its first word)", lambda w: w["kind"] == "shape"),
    ("second word of a noun (plus sign)", lambda w: w["kind"] == "second"),
    ("shape covers 1 region", lambda w: w["regions"] == 1),
    ("shape covers 2-3 regions", lambda w: (w["regions"] >= 2) & (w["regions"] <= 3)),
    ("shape covers 4+ regions", lambda w: w["regions"] >= 4),
    ("caption words 1-3", lambda w: w["position"] <= 3),
    ("caption words 4-6", lambda w: (w["position"] >= 4) & (w["position"] <= 6)),
    ("caption words 7-9", lambda w: (w["position"] >= 7) & (w["position"] <= 9)),
    ("caption words 10+", lambda w: w["position"] >= 10),
)


def peaks(model, data, scenes):
    """Print the share of colour and shape words whose attention peaks on the shape they name, then where the
    misses are: by word kind, shape size and caption position, whether a missing peak is next to the shape or on
    another one, and how much of the map's mass lies on the shape."""
    from captionkit.decoding import greedy_attention
    from captionkit.synthetic import grid_coverage, named_object
    from captionkit.synthetic.grammar import SHAPE_WORDS
    from captionkit.synthetic.scenes import COLOURS
    from captionkit.vocabulary import caption_words

    nouns = [noun for shape_nouns in SHAPE_WORDS.values() for noun in shape_nouns]
    object_words = set(COLOURS) | {word for noun in nouns for word in noun}
    second_words = {word for noun in nouns for word in noun[1:]}
    grid = math.isqrt(model.spec.feature_shape[0])

    captions, weights = greedy_attention(model, data["val_features"][:len(scenes)], data["val_captions"].shape[1] - 1)
    hits, held, unnamed = [], [], 0
    words = {"kind": [], "regions": [], "position": [], "adjacent": [], "elsewhere": [], "mass": []}
    for row, row_weights, scene in zip(captions, weights, scenes):
        holds = grid_coverage(scene, grid) > 0
        # Regions within one step (8-neighbourhood) of a region holding each shape: a peak there but not on the
        # shape is a near miss, at the grid's resolution, rather than a look elsewhere.
        padded = np.pad(holds.reshape(-1, grid, grid), ((0, 0), (1, 1), (1, 1)))
        near = np.zeros_like(padded[:, 1:-1, 1:-1])
        for dy in range(3):
            for dx in range(3):
                near |= padded[:, dy:dy + grid, dx:dx + grid]
        near = near.reshape(len(holds), -1)
        for position, (t, word) in enumerate(caption_words(row, model.idx_to_word), start=1):
            k = named_object(word, scene)
            if k is not None:
                peak = np.argmax(row_weights[t])
                hits.append(holds[k, peak])
                held.append(holds[k])
                words["kind"].append("colour" if word in COLOURS else "second" if word in second_words else "shape")
                words["regions"].append(holds[k].sum())
                words["position"].append(position)
                words["adjacent"].append(near[k, peak] and not holds[k, peak])
                # A miss whose peak holds another shape of the scene looked at an object, the wrong one (e.g. the
                # next one to be named), rather than at the background.
                words["elsewhere"].append(not holds[k, peak] and np.delete(holds[:, peak], k).any())
                words["mass"].append(row_weights[t][holds[k]].sum())
            elif word in object_words:
                unnamed += 1
    print(f"peaks: {len(scenes)} validation scenes, {grid}x{grid} grid, greedy captions")
    print()
    if not hits:
        print(f"no generated word names a colour or shape of its scene ({unnamed} name one that is not there): "
              "train longer")
        return
    hits, held = np.array(hits), np.array(held)
    print("| colour/shape words | peak on the named shape | random region | best picture-blind region |")
    print("|---:|---:|---:|---:|")
    print(f"| {len(hits)} | {hits.mean():.1%} | {held.mean():.1%} | {held.mean(axis=0).max():.1%} |")
    if unnamed:
        print(f"\n{unnamed} further colour/shape words named nothing in their scene (false words), left out")
    words = {name: np.array(values) for name, values in words.items()}
    # A random region's hit rate is also the mass a uniform map puts on the shape: the "mass" column's baseline.
    print("\n| words | count | peak on the named shape | random region | attention mass on the shape | "
          "misses next to the shape | misses on another shape |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, select in (("all", lambda w: np.ones(len(hits), dtype=bool)),) + BREAKDOWN_ROWS:
        chosen = select(words)
        if not chosen.any():
            continue
        misses = chosen & ~hits
        of_misses = [f"{words[name][misses].mean():.1%}" if misses.any() else "-" for name in ("adjacent", "elsewhere")]
        print(f"| {label} | {chosen.sum()} | {hits[chosen].mean():.1%} | {held[chosen].mean():.1%} | "
              f"{words['mass'][chosen].mean():.1%} | {' | '.join(of_misses)} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=["speed"], help="what to measure (default: speed)")
    speed_options = parser.add_argument_group("speed")
    speed_options.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"], choices=list(TORCH_CELLS))
    speed_options.add_argument("--batches", nargs="+", type=int, default=[25, 50], help="N of the train steps")
    speed_options.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    speed_options.add_argument("--threads", type=int, default=2)
    speed_options.add_argument("--rounds", type=int, default=8, help="rounds of interleaved blocks (default 8)")
    speed_options.add_argument("--block", type=int, default=3, help="timed iterations per worker per round")
    speed_options.add_argument("--warmup", type=int, default=2, help="untimed iterations at a worker's start")
    speed_options.add_argument("--pause", type=float, default=0.3, help="seconds between blocks")
    trained = parser.add_argument_group("truth and peaks")
    trained.add_argument("--data", help="grid bundle of the built-in scenes; written there when it does not exist "
                                        "(default: a new one in a temporary directory)")
    trained.add_argument("--grid", type=int, default=4, help="K of a K x K grid, for a bundle written here")
    trained.add_argument("--num-train", type=int, default=8000, help="scenes, for a bundle written here")
    trained.add_argument("--num-val", type=int, default=1000, help="scenes, for a bundle written here")
    trained.add_argument("--cell", default="rnn", help="cell of both models (default rnn)")
    trained.add_argument("--seconds", type=float, default=300, help="training wall time of each model")
    trained.add_argument("--eval-images", type=int, default=1000, help="validation images captioned")
    trained.add_argument("--run", help="peaks: the attention model of this run (its best checkpoint, else its "
                                       "latest) or of this checkpoint file, on its data, instead of training one")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.cell, args.task, args.n, args.threads, args.warmup)
        return
    if "speed" in args.parts:
        speed(args)
        print()
    if "truth" not in args.parts and "peaks" not in args.parts:
        return
    from captionkit.data import load_coco_data
    from captionkit.loading import load_model

    if "peaks" in args.parts and args.run:
        model, info = load_model(args.run)
        if model.spec.attention is None or not (args.data or info["config"]["data"]):
            raise SystemExit(f"{args.run}: not an attention model trained on a grid bundle")
        args.data = args.data or info["config"]["data"]
        print(f"attention model: {info['checkpoint']}, iteration {info['iteration']}, "
              f"{info['run_state'].get('elapsed', math.nan):.0f} s of training\n")
    data_dir = grid_bundle(args)
    data = load_coco_data(data_dir)
    scenes = val_scenes(data_dir)[:args.eval_images]
    if "truth" in args.parts:
        model = truth(args, data, scenes)
    elif not args.run:
        model = build_model(data, args.cell, attention=True)
        iterations, spent = train_for(model, data, args.seconds)
        print(f"attention model: {args.cell}, {iterations} iterations in {spent:.0f} s\n")
    if "peaks" in args.parts:
        peaks(model, data, scenes)


if __name__ == "__main__":
    main()
