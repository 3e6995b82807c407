"""How fast picture files become features, per encoder, and how long the own-data path takes end to end.

    python benchmarks/bench_encoders.py                     # encoders, then the offline path from the README
    python benchmarks/bench_encoders.py --skip-path --pictures 32 --rounds 3

Encoders: each runs in a worker process of its own (one thread pool per process: onnxruntime's and torch's would
fight in one) that encodes the same JPEG files, 500x375 like Flickr's, reading and decoding included, in
interleaved rounds. `shapes` always; `onnx` on a ResNet-50 exported from torchvision (random weights: the
arithmetic is the same as with trained ones) and the torchvision plugin's `resnet50` with `weights=none`, when
torch and torchvision are installed. The ratio onnx / torchvision compares the two ways of running one network.

The own-data path: `data synth --pictures` (4000 train, 50 val, 100 test, enlarged twice), `data import --encoder
shapes`, `train --epochs 10 --hidden-dim 256`, `caption` of the 100 test files, each timed as a user runs it.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import serve, time_interleaved, worker_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_jpegs(directory, count):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        # Smooth colour fields plus noise: JPEG-compressible like a photo, not like white noise.
        y, x = np.mgrid[0:375, 0:500]
        waves = (np.sin(x / rng.uniform(20, 80) + k), np.cos(y / rng.uniform(20, 80)), np.sin((x + y) / 50))
        base = np.stack(waves, -1)
        pixels = np.clip(127 + 100 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = Path(directory) / f"{k:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def export_resnet50(path):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()  # pooled 2048-d features, as the plugin gives
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(path), input_names=["x"], output_names=["features"],
                      dynamic_axes={"x": {0: "N"}, "features": {0: "N"}}, dynamo=False)


def build(name, model_path):
    from captionkit.encoders import make_encoder

    if name == "shapes":
        return make_encoder("shapes")
    if name == "onnx":
        return make_encoder(f"onnx:{model_path}", {"mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225",
                                                  "size": "224"})
    sys.path.insert(0, str(ROOT / "plugins" / "captionkit-torchvision"))
    from captionkit.encoders import EncoderRegistry

    registry = EncoderRegistry(builtins={"resnet50": "captionkit_torchvision:ResNet50Encoder"})
    return registry.load("resnet50")(None, {"weights": "none"})


def worker(name, pictures_dir, model_path):
    from captionkit.encoders.pipeline import encode_files

    encoder = build(name, model_path)
    paths = sorted(Path(pictures_dir).glob("*.jpg"))
    serve(lambda: encode_files(encoder, paths), warmup=1,
          hello=lambda: {"describe": encoder.describe(), "dim": encoder.dim, "pictures": len(paths)})


def bench_encoders(args, scratch):
    pictures = scratch / "jpegs"
    pictures.mkdir()
    write_jpegs(pictures, args.pictures)
    names = ["shapes"]
    model_path = scratch / "resnet50.onnx"
    have_torch = all(importlib.util.find_spec(m) for m in ("torch", "torchvision"))
    if have_torch and importlib.util.find_spec("onnxruntime"):
        export_resnet50(model_path)
        names += ["onnx", "torchvision"]
    else:
        print("onnx and torchvision resnet50: skipped (torch, torchvision and onnxruntime are needed to build them)")
    commands = {name: [sys.executable, __file__, "--worker", name, str(pictures), str(model_path)] for name in names}
    threads = len(os.sched_getaffinity(0))
    records = time_interleaved(commands, worker_env(threads), args.rounds, 1, 1.0)
    print(f"\n{args.pictures} JPEG files of 500x375, read, decoded and encoded; {threads} threads; median of "
          f"{args.rounds} interleaved rounds")
    print(f"{'encoder':<12}{'dim':>6}{'seconds':>10}{'pictures/s':>12}  configuration")
    medians = {}
    for name, record in records.items():
        medians[name] = float(np.median(record["times"]))
        print(f"{name:<12}{record['hello']['dim']:>6}{medians[name]:>10.3f}{args.pictures / medians[name]:>12.1f}  "
              f"{record['hello']['describe']}")
    if "onnx" in medians:
        ratios = [o / t for o, t in zip(records["onnx"]["round_medians"], records["torchvision"]["round_medians"])]
        print(f"onnx / torchvision time, per round: {', '.join(f'{r:.2f}' for r in ratios)}; median "
              f"{np.median(ratios):.2f}")


def bench_path(scratch):
    steps = [
        ("synth pictures", ["data", "synth", "pictures", "--pictures", "--num-train", "4000", "--num-val", "50",
                            "--num-test", "100", "--scale", "2"]),
        ("import (shapes)", ["data", "import", "bundle", "--karpathy", "pictures/dataset_shapes.json", "--images",
                             "pictures/images", "--encoder", "shapes"]),
        ("train", ["train", "--data", "bundle", "--epochs", "10", "--hidden-dim", "256", "--out", "run"]),
        ("caption 100 files", ["caption", "run", *[f"pictures/images/test_{k:06d}.png" for k in range(100)]]),
        ("caption 1 file", ["caption", "run", "pictures/images/test_000000.png"]),
    ]
    print("\nThe offline own-data path, each command in a new process:")
    for label, argv in steps:
        start = time.perf_counter()
        command = [sys.executable, "-c", "from captionkit.cli import main; main()", *argv]
        subprocess.run(command, cwd=scratch, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"  {label:<20}{time.perf_counter() - start:7.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--pictures", type=int, default=64, help="JPEG files per timed call (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--skip-path", action="store_true", help="only the encoders, not the own-data path")
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    with tempfile.TemporaryDirectory() as scratch:
        bench_encoders(args, Path(scratch))
        if not args.skip_path:
            path_dir = Path(scratch) / "path"
            path_dir.mkdir()
            bench_path(path_dir)


if __name__ == "__main__":
    main()
