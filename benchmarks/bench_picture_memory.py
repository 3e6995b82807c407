"""Peak memory of `captionkit caption` and `captionkit data import` on folders of 12-megapixel photos.

    python benchmarks/bench_picture_memory.py                  # 1, 40 and 256 photos, shapes and onnx encoders
    python benchmarks/bench_picture_memory.py --counts 1 40 --encoders shapes
    python benchmarks/bench_picture_memory.py --encoders resnet50 resnet50-grid vgg16 vgg16-grid   # torchvision

Every picture is reduced to its encoder's input size as soon as it is read (a JPEG decoded at the smallest of its
built-in scales that covers that size), so a batch holds model-sized pictures only and the peak should not grow
with the number of photos. Each command runs in a fresh child process; its peak resident memory is the child's
``ru_maxrss`` (from ``os.wait4``). The baseline row is the same command on one 64x64 PNG: the interpreter, the
libraries, the model and the encoder. The photos are 4000x3000 JPEGs of smooth content and a little noise, all
copies of one file. The photo and the ONNX model are made in children too: on Linux a child's ru_maxrss starts from
its parent's resident size at the fork, so this process stays small. The torchvision encoders (the
captionkit-torchvision plugin, installed) run with random weights (``weights=none``: the same arithmetic as the
ImageNet weights, and nothing to download); ``-grid`` is their ``grid=yes`` (ResNet-50's layer4, VGG-16's conv5_3).
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-c", "from captionkit.cli import main; main()"]


def run_child(args, cwd):
    """(seconds, peak RSS in MB) of one captionkit command run in a child process; raises when it fails."""
    start = time.perf_counter()
    child = subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = child.stderr.read().decode()
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{stderr}")
    return elapsed, usage.ru_maxrss / 1024  # kilobytes on Linux


def make_photo(path, width=4000, height=3000):
    from PIL import Image

    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    pixels = np.stack([128 + 100 * np.sin(rows / 300), 128 + 100 * np.cos(cols / 400), (rows + cols) / 28], axis=-1)
    pixels += rng.normal(0, 2, pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=85)


def make_onnx(path, size=224):
    """A convolution + global average pooling model of the ImageNet input size (needs the onnx package)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((64, 3, 7, 7)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["map"], strides=[4, 4]),
             helper.make_node("GlobalAveragePool", ["map"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["features"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size,
                                                                                                    size])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 64])],
                              [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_run(root, name, encoder, options):
    """A run trained briefly on the shapes pictures imported with ``encoder`` (and its ``options``), the table's
    ``name``: what `caption` needs."""
    if not (root / "synth").exists():
        run_child(["data", "synth", root / "synth", "--pictures", "--num-train", 40, "--num-val", 8], root)
    run_child(["data", "import", root / f"bundle-{name}", "--karpathy", root / "synth" / "dataset_shapes.json",
               "--images", root / "synth" / "images", "--encoder", encoder, *options], root)
    run_child(["train", "--data", root / f"bundle-{name}", "--epochs", 1, "--hidden-dim", 8, "--wordvec-dim", 8,
               "--batch-size", 8, "--eval-images", 4, "--num-samples", 2, "--out", root / f"run-{name}"], root)
    return root / f"run-{name}"


def photo_folder(root, photo, count):
    """A folder of ``count`` copies of ``photo`` and a Karpathy file listing them as train pictures, with one more
    copy (hidden, so `caption` does not walk it) as the val picture a bundle needs."""
    folder = root / f"photos-{count}"
    if not folder.exists():
        folder.mkdir()
        for name in [f"photo_{k:04d}.jpg" for k in range(count)] + [".val.jpg"]:
            shutil.copyfile(photo, folder / name)
    images = [{"filename": f"photo_{k:04d}.jpg", "split": "train", "sentences": [{"raw": "a photo of something"}]}
              for k in range(count)]
    images.append({"filename": ".val.jpg", "split": "val", "sentences": [{"raw": "a photo of something"}]})
    (root / f"captions-{count}.json").write_text(json.dumps({"images": images}))
    return folder


# name in the table -> (the --encoder value, its --encoder-option values); onnx's model file is made per run.
ENCODERS = {
    "shapes": ("shapes", []),
    "onnx": (None, []),
    "resnet50": ("resnet50", ["weights=none"]),
    "resnet50-grid": ("resnet50", ["weights=none", "grid=yes"]),
    "vgg16": ("vgg16", ["weights=none"]),
    "vgg16-grid": ("vgg16", ["weights=none", "grid=yes"]),
}


def versions():
    """The versions of the libraries that decode and encode the pictures, those installed."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("Pillow", "onnxruntime", "torch", "torchvision"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def make_in_child(what, path):
    subprocess.run([sys.executable, __file__, "--make", what, str(path)], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 40, 256])
    parser.add_argument("--encoders", nargs="+", default=["shapes", "onnx"], choices=list(ENCODERS))
    parser.add_argument("--make", nargs=2, metavar=("WHAT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        {"photo": make_photo, "onnx": make_onnx}[args.make[0]](Path(args.make[1]))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{versions()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photo = root / "photo.jpg"
        make_in_child("photo", photo)
        print(f"# photo: 4000x3000 JPEG, {photo.stat().st_size / 1e3:.0f} KB")
        print(f"{'encoder':13} {'command':12} {'photos':>6} {'seconds':>8} {'peak RSS MB':>12}")
        for encoder in args.encoders:
            encoder_spec, values = ENCODERS[encoder]
            options = [part for value in values for part in ("--encoder-option", value)]
            if encoder == "onnx":
                make_in_child("onnx", root / "model.onnx")
                encoder_spec = f"onnx:{root / 'model.onnx'}"
            run_dir = make_run(root, encoder, encoder_spec, options)
            small = root / "synth" / "images" / "train_000000.png"
            seconds, peak = run_child(["caption", run_dir, small], root)
            print(f"{encoder:13} {'caption':12} {'64x64':>6} {seconds:8.1f} {peak:12.0f}")
            for count in args.counts:
                folder = photo_folder(root, photo, count)
                seconds, peak = run_child(["caption", run_dir, folder], root)
                print(f"{encoder:13} {'caption':12} {count:6d} {seconds:8.1f} {peak:12.0f}", flush=True)
                out = root / f"import-{encoder}-{count}"
                seconds, peak = run_child(["data", "import", out, "--karpathy", root / f"captions-{count}.json",
                                           "--images", folder, "--encoder", encoder_spec, *options], root)
                shutil.rmtree(out)
                print(f"{encoder:13} {'data import':12} {count:6d} {seconds:8.1f} {peak:12.0f}", flush=True)


if __name__ == "__main__":
    main()
