"""Streaming against decode-once (issue 18, acceptance 4): the test accuracy of one short recipe and
the peak resident memory, on EuroSAT (or any ImageFolder) at two training-set sizes.

Each (mode, size) runs in a fresh process, which trains mobilenetv3_small_050 on the labels (SGD,
one-cycle, batch 64, the trainer's own loop) on the first N training images of a seeded shuffle and
reports its test accuracy and its peak RSS: its own (ru_maxrss of the training process, which
includes the pages of a memory-mapped decoded array it touched) and its DataLoader workers' (the
largest one). decode: every image decoded once into a fresh cache directory, 4 replayed shift/flip
views; stream: decoded per sample by workers, timm's random-resized crops and flips.

    python benchmarks/streaming.py                                  # 6,000 and 18,900 images, 3 epochs
    python benchmarks/streaming.py --sizes 1000 3000 --epochs 2     # a quick look

Prints a table and writes benchmarks/results/streaming.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
EUROSAT = Path(__file__).parent / ".cache" / "datasets" / "eurosat-rgb"
STUDENT = "mobilenetv3_small_050"


def one_run(data: Path, mode: str, images: int, epochs: int, workers: int, threads: int) -> dict:
    """Train once in this process and return what it measured."""
    import dataclasses
    import hashlib

    import numpy as np
    import timm
    import torch

    from edgekd.augment import Augmentation
    from edgekd.data import ImageFileDataset, decode_once, load_image_folder
    from edgekd.distill.losses import make_loss
    from edgekd.distill.trainer import TrainConfig, accuracy, default_lr, predict, train
    from edgekd.streaming import streamed

    torch.set_num_threads(threads)
    splits = load_image_folder(data, 64)
    chosen = np.sort(np.random.default_rng(0).permutation(len(splits.train))[:images])
    train_images = ImageFileDataset([splits.train.samples[i] for i in chosen], splits.preprocessing)
    fingerprint = hashlib.sha256(f"{splits.fingerprint}|{images}".encode()).hexdigest()
    splits = dataclasses.replace(splits, train=train_images, fingerprint=fingerprint)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        data_splits = decode_once(splits, Path(cache)) if mode == "decode" else streamed(splits, workers)
        prepared = time.perf_counter() - started
        torch.manual_seed(0)
        model = timm.create_model(STUDENT, num_classes=splits.num_classes)
        config = TrainConfig(
            epochs=epochs,
            batch_size=64,
            lr=default_lr("sgd", 64),
            weight_decay=5e-4,
            optimizer="sgd",
            augmentation=Augmentation(draws=4, max_shift=8, hflip=True),
        )
        history = train(model, data_splits, config, loss=make_loss("ce"))
        test = accuracy(*predict(model, data_splits.test))
    return {
        "mode": mode,
        "train_images": images,
        "epochs": epochs,
        "workers": workers if mode == "stream" else 0,
        "test_accuracy": round(test, 4),
        "val_accuracy": round(history[-1].val_accuracy, 4),
        "prepare_s": round(prepared, 1),
        "train_s": round(sum(m.seconds for m in history), 1),
        # Linux reports ru_maxrss in KiB
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "worker_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| mode | train images | epochs | test acc | peak RSS MB | workers peak MB | prepare s | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['train_images']:,} | {r['epochs']} | {100 * r['test_accuracy']:.2f} % | "
            f"{r['peak_rss_mb']:,.0f} | {r['worker_peak_rss_mb']:,.0f} | {r['prepare_s']} | {r['train_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=EUROSAT)
    parser.add_argument("--sizes", type=int, nargs="+", default=[6000, 18900])
    parser.add_argument("--modes", nargs="+", default=["decode", "stream"], choices=["decode", "stream"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "streaming.json")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child run: one JSON line
    args = parser.parse_args()
    if args.one:
        print(
            json.dumps(
                one_run(args.data, args.modes[0], args.sizes[0], args.epochs, args.workers, args.threads)
            )
        )
        return
    rows = []
    for images in args.sizes:
        for mode in args.modes:
            command = [
                sys.executable, __file__, "--one", "--data", str(args.data), "--modes", mode,
                "--sizes", str(images), "--epochs", str(args.epochs), "--workers", str(args.workers),
                "--threads", str(args.threads),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{mode} at {images} images failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"data": str(args.data), "student": STUDENT, "runs": rows}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
