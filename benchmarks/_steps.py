"""The training step that bench_kernels.py, bench_cells.py and bench_bf16.py time, built the same way for each
implementation.

Sizes are the seed notebook's (D=512 image features, W=256 word vectors, H=512 hidden units, V=1004 words, T=16
steps), float32 parameters; the products in float32, or in mixed precision when asked (captionkit's
``precision="bf16"``, PyTorch's ``torch.autocast`` with bfloat16). captionkit's step is ``CaptioningRNN.loss`` then
Adam on every parameter as the solver runs it (``optim.update_all``: the fused, in-place ``kernels.adam_update_many``
on the compiled backend; ``optim.adam`` on numpy). PyTorch's is nn.Embedding, an nn.Linear projection to the initial
state, nn.RNN / nn.LSTM / nn.GRU, nn.Linear scores, cross_entropy(ignore_index=<NULL>) summed and divided by N as
captionkit's loss is, backward, torch.optim.Adam.
"""
import numpy as np

D, W, H, V, T = 512, 256, 512, 1004, 16
MAX_LENGTH = 30  # of a sampled caption
LEARNING_RATE = 5e-3
NULL, START = 0, 1


def vocabulary():
    """V words with <NULL> and <START> and no <END>, so greedy decoding never stops early."""
    words = ["<NULL>", "<START>"] + [f"w{i}" for i in range(2, V)]
    return {w: i for i, w in enumerate(words)}


def make_batch(N, rng, captions_kind="full"):
    """features (N, D) float32 and captions (N, T+1) starting with <START>.

    ``full``: every position a real word, so every position counts and FLOP counts are exact. ``coco``: COCO-like
    rows of 8 to 14 words and <NULL> padding, where captionkit's compiled output layer skips the padded positions.
    """
    features = rng.randn(N, D).astype(np.float32)
    captions = rng.randint(2, V, size=(N, T + 1))
    captions[:, 0] = START
    if captions_kind == "coco":
        for row in captions:
            row[rng.randint(8, 15) + 1:] = NULL
    return features, captions


def captionkit_model(cell_type, backend, precision="fp32"):
    """The seed-sized float32 model; ``precision`` "bf16" runs its products on bfloat16 inputs (float32 sums)."""
    from captionkit import CaptioningRNN

    return CaptioningRNN(vocabulary(), input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type,
                         dtype=np.float32, backend=backend, seed=0, precision=precision)


def captionkit_train_step(model, features, captions):
    """One step of ``model`` (from :func:`captionkit_model`) on this batch: a function of no argument."""
    from captionkit import optim

    # The solver's update: optim.adam on numpy (the reference process never loads the compiled kernels, for peak
    # memory), else fused_adam, which optim.update_all runs as one kernels.adam_update_many call.
    rule = optim.adam if model.backend == "numpy" else optim.fused_adam
    configs = {name: {"learning_rate": LEARNING_RATE} for name in model.params}

    def update(grads):
        optim.update_all(rule, model.params, grads, configs)

    def train_step():
        _, grads = model.loss(features, captions)
        update(grads)

    return train_step


# PyTorch's module for each cell that has one; gru_numpy (the test suite's numpy-only GRU) computes nn.GRU's equations.
TORCH_MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "gru_numpy": "GRU"}


def torch_model(cell_type, threads):
    """PyTorch's modules (embed, proj, recurrent, vocab) and ``initial(h0)``, the recurrent state from h0."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    recurrent = getattr(nn, TORCH_MODULES[cell_type])(W, H, batch_first=True)

    def initial(h0):
        return (h0, torch.zeros_like(h0)) if cell_type == "lstm" else h0

    return (nn.Embedding(V, W), nn.Linear(D, H), recurrent, nn.Linear(H, V)), initial


def _autocast(enabled):
    """``torch.autocast("cpu", dtype=torch.bfloat16)`` when ``enabled`` (mixed precision as PyTorch users train),
    else a context that changes nothing."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def torch_train_step(modules, initial, features, captions, autocast=False):
    """One PyTorch step of ``modules`` (from :func:`torch_model`) on this numpy batch: a function of no argument.
    ``autocast``: the forward and the loss inside ``torch.autocast("cpu", dtype=torch.bfloat16)``, the backward
    and Adam outside it, as PyTorch's mixed-precision recipe has them."""
    import torch
    import torch.nn.functional as F

    embed, proj, recurrent, vocab = modules
    features, captions = torch.from_numpy(features), torch.from_numpy(captions).long()
    N = features.shape[0]
    optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=LEARNING_RATE)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(autocast):
            hidden, _ = recurrent(embed(captions[:, :-1]), initial(proj(features).unsqueeze(0)))
            scores = vocab(hidden)
            loss = F.cross_entropy(scores.reshape(-1, V), captions[:, 1:].reshape(-1), ignore_index=NULL,
                                   reduction="sum") / N
        loss.backward()
        optimizer.step()

    return train_step


def torch_greedy(modules, initial, features, max_length=MAX_LENGTH, autocast=False):
    """PyTorch's greedy sampling with ``modules`` (from :func:`torch_model`): a function of no argument.
    ``autocast``: inside ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    import torch

    embed, proj, recurrent, vocab = modules
    features = torch.from_numpy(features)
    N = features.shape[0]

    @torch.no_grad()
    @_autocast(autocast)
    def sample():
        state = initial(proj(features).unsqueeze(0))
        words = torch.full((N,), START, dtype=torch.long)
        out = torch.empty((N, max_length), dtype=torch.long)
        for t in range(max_length):
            step_out, state = recurrent(embed(words).unsqueeze(1), state)
            words = vocab(step_out[:, 0]).argmax(dim=1)
            out[:, t] = words
        return out

    return sample


def evaluation_data(rng, images, captions_per_image=5):
    """A val split of ``images`` images (random features) with ``captions_per_image`` full captions each, in the
    layout of captionkit.data.load_coco_data and with :func:`vocabulary`'s words."""
    word_to_idx = vocabulary()
    features, _ = make_batch(images, rng)
    _, captions = make_batch(images * captions_per_image, rng)
    return {"word_to_idx": word_to_idx, "idx_to_word": sorted(word_to_idx, key=word_to_idx.get),
            "val_features": features, "val_captions": captions,
            "val_image_idxs": np.repeat(np.arange(images), captions_per_image)}
