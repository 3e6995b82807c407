"""Fixtures and helpers of the whole suite (tests/README.md): small bundles in the assignment's layout, runs trained
once per session, fake plugin distributions and the kernels' product paths."""
import json
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from captionkit.bundle.layout import REQUIRED_SPLITS, bundle_paths, images_path
from captionkit.kernels import BF16_KERNELS

# The suite is grouped in folders (unit/, integration/, cli/, docs/) below this one; paths are taken from here.
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DATA_DIR = TESTS_DIR / "data"


def real_vocab():
    """The assignment's real 1004-word vocabulary (tests/data/coco2014_vocab.json)."""
    with open(DATA_DIR / "coco2014_vocab.json", encoding="utf-8") as f:
        return json.load(f)


def make_captions(rng, num, vocab_size, max_len=17):
    """Caption rows shaped like COCO's: <START>, 8 to 14 words (Zipf-like over the frequency-sorted vocabulary,
    as real captions are), <END>, <NULL> padding."""
    captions = np.zeros((num, max_len), dtype=np.int32)
    ranks = np.arange(1, vocab_size - 3)
    probs = 1.0 / ranks
    probs /= probs.sum()
    for i in range(num):
        length = rng.randint(8, 15)
        captions[i, 0] = 1
        captions[i, 1 : length + 1] = 4 + rng.choice(len(ranks), size=length, p=probs)
        captions[i, length + 1] = 2
    return captions


def bundle_files(directory, pca=True):
    """The files of a bundle that :func:`write_bundle` writes, by role (``captions``, ``vocab``,
    ``{split}_features``, ``{split}_urls``, ``{split}_images``): the assignment's names, taken from
    captionkit/bundle/layout.py so that no test spells them out."""
    paths = bundle_paths(directory, pca_features=pca, layout="cs231n")
    for split in REQUIRED_SPLITS:
        paths[f"{split}_images"] = images_path(directory, split, layout="cs231n")
    return paths


def write_bundle(directory, num_train_images=40, num_val_images=12, captions_per_image=2, feature_dim=512, seed=0,
                 vocab=None, pca=True):
    """Write a small, valid bundle to ``directory`` (in the assignment's layout, the one its COCO bundle uses) and
    return its path.

    Features are Gaussian (one row per image); captions come from :func:`make_captions`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = bundle_files(directory, pca=pca)
    rng = np.random.RandomState(seed)
    vocab = real_vocab() if vocab is None else vocab
    V = len(vocab["idx_to_word"])
    with h5py.File(files["captions"], "w") as f:
        for split, num_images in (("train", num_train_images), ("val", num_val_images)):
            f[f"{split}_captions"] = make_captions(rng, num_images * captions_per_image, V)
            f[f"{split}_image_idxs"] = np.repeat(np.arange(num_images, dtype=np.int32), captions_per_image)
    for split, num_images in (("train", num_train_images), ("val", num_val_images)):
        with h5py.File(files[f"{split}_features"], "w") as f:
            f["features"] = rng.randn(num_images, feature_dim).astype(np.float32)
        with open(files[f"{split}_urls"], "w", encoding="utf-8") as f:
            f.writelines(f"http://example.org/{split}/{i}.jpg\n" for i in range(num_images))
    with open(files["vocab"], "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    return directory


# (time-step products, other products) on packed panels? Every combination a machine can run: all panels (AVX-512
# CPU, OpenBLAS on narrower kernels), panels for the steps only (OpenBLAS on AVX-512 kernels), all BLAS (no AVX-512).
PRODUCT_PATHS = {"all panels": (True, True), "step panels": (True, False), "all blas": (False, False)}


@pytest.fixture(params=list(PRODUCT_PATHS))
def step_products(request):
    """The kernels' products on packed panels (where the CPU has AVX-512) or on BLAS, as PRODUCT_PATHS says."""
    from captionkit._ext import _blas

    previous = _blas.use_panel(*PRODUCT_PATHS[request.param])
    yield request.param
    _blas.use_panel(*previous)


@pytest.fixture(params=BF16_KERNELS)  # a CPU with AMX runs both kernels, so both are tested there
def bf16_kernel(request):
    """Every bfloat16 product of the test on one kernel; the test skips, saying so, where this CPU lacks it."""
    from captionkit import kernels

    if request.param not in kernels.bf16_kernels():
        pytest.skip(f"this CPU (or its OS) does not run the {request.param} bfloat16 kernel")
    previous = kernels.bf16_kernel()
    kernels.use_bf16_kernel(request.param)
    yield request.param
    kernels.use_bf16_kernel(previous)


@pytest.fixture
def threads():
    """Set captionkit.parallel's thread count for one test (call the fixture's value) and restore it after."""
    from captionkit import parallel

    previous = parallel.get_num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(previous)


def relative_error(actual, expected):
    """The norm of the difference relative to the expected values', in float64."""
    expected = np.asarray(expected, dtype=np.float64)
    return np.linalg.norm(np.asarray(actual, dtype=np.float64) - expected) / max(np.linalg.norm(expected), 1e-300)


@pytest.fixture
def bundle_dir(tmp_path):
    """A small valid bundle with the real vocabulary."""
    return write_bundle(tmp_path / "bundle")


def make_distribution(root, dist, version, entry_points, modules=None, group="captionkit.cells"):
    """Write ``dist``'s metadata and entry points (``{name: "module:attr"}`` in ``group``) and its modules under
    ``root``: a plugin distribution that importlib.metadata finds on sys.path, without pip."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_root(tmp_path, monkeypatch):
    """A folder on sys.path for :func:`make_distribution`; the fake plugin modules (``ck_fake*``) are forgotten
    after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("ck_fake")]:
        del sys.modules[name]


def overfit_losses(tmp_path, cell_type, lr_decay, seeds=(231, 1, 2)):
    """The notebooks' overfit run on stand-in data, once per seed -> (first losses, final losses).

    50 captions drawn by ``load_coco_data(max_train=50)`` after ``np.random.seed(seed)``, hidden 512, wordvec 256,
    adam lr 5e-3, 50 epochs of batch 25 (100 iterations), as in the assignment.
    """
    from captionkit import CaptioningRNN, CaptioningSolver
    from captionkit.data import load_coco_data

    bundle = write_bundle(tmp_path / "overfit", num_train_images=100, num_val_images=4, captions_per_image=1)
    first, final = [], []
    for seed in seeds:
        np.random.seed(seed)
        small_data = load_coco_data(bundle, max_train=50)
        model = CaptioningRNN(cell_type=cell_type, word_to_idx=small_data["word_to_idx"],
                              input_dim=small_data["train_features"].shape[1], hidden_dim=512, wordvec_dim=256)
        solver = CaptioningSolver(model, small_data, update_rule="adam", num_epochs=50, batch_size=25,
                                  optim_config={"learning_rate": 5e-3}, lr_decay=lr_decay, verbose=False)
        solver.train()
        assert len(solver.loss_history) == 100
        first.append(float(solver.loss_history[0]))
        final.append(float(solver.loss_history[-1]))
    return first, final


BAD_PLUGIN_MODULE = """
from captionkit.cells import ParamSpec
from captionkit.cells.rnn import RNNCell


class DeclaresWrongShapes(RNNCell):
    name = "badshape"

    def parameters(self, wordvec_dim, hidden_dim):
        return {"Wx": ParamSpec((hidden_dim, wordvec_dim), wordvec_dim), "Wh": ParamSpec((hidden_dim, hidden_dim)),
                "b": ParamSpec((hidden_dim,))}


class ReturnsWrongShapes(RNNCell):
    name = "badgrad"

    def backward(self, dh, cache):
        dx, dh0, grads = super().backward(dh, cache)
        return dx, dh0, dict(grads, Wx=grads["Wx"].T)
"""


def install_bad_plugins(root):
    """Four fake distributions, each broken in its own way, beside whatever is really installed."""
    make_distribution(root, "ck-bad-import", "0.1", {"badimport": "ck_fake_bad_import:Cell"},
                      {"ck_fake_bad_import": "raise RuntimeError('plugin exploded at import')\n"})
    make_distribution(root, "ck-bad-target", "0.2", {"badtarget": "ck_fake_bad_cells:NoSuchCell"},
                      {"ck_fake_bad_cells": BAD_PLUGIN_MODULE})
    make_distribution(root, "ck-bad-shape", "0.3", {"badshape": "ck_fake_bad_cells:DeclaresWrongShapes"})
    make_distribution(root, "ck-bad-grad", "0.4", {"badgrad": "ck_fake_bad_cells:ReturnsWrongShapes"})


# Runs trained once per session and shared read-only (a test that changes a run copies it first).
@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A tiny bundle and a finished run on it (2 epochs of 6 iterations): (root, bundle, run)."""
    from captionkit import train
    from training_helpers import TINY, tiny_bundle

    root = tmp_path_factory.mktemp("reliability")
    bundle = tiny_bundle(root / "bundle")
    train(data=str(bundle), out=root / "run", handle_signals=False, **TINY)
    return root, bundle, root / "run"


@pytest.fixture(scope="session")
def learnable(tmp_path_factory):
    """A bundle whose captions follow from the features (training_helpers.learnable_bundle)."""
    from training_helpers import learnable_bundle

    return learnable_bundle(tmp_path_factory.mktemp("learnable") / "bundle")


@pytest.fixture(scope="session")
def three_runs(tmp_path_factory, learnable):
    """Three runs differing in hidden size and learning rate, validated every 3 iterations."""
    from captionkit import train
    from training_helpers import TINY

    root = tmp_path_factory.mktemp("three")
    runs = []
    for k, (hidden, lr) in enumerate(((12, 1e-2), (16, 1e-2), (12, 3e-2))):
        out = root / f"run{k}"
        train(data=str(learnable), out=out, progress=False, handle_signals=False,
              **{**TINY, "hidden_dim": hidden, "lr": lr, "epochs": 6, "eval_every": 3})
        runs.append(out)
    return runs
