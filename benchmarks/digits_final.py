"""`make fit`'s final training on digits with a fixed student, seed and thread count, without the
search or the export: the evidence for the small-data final recipe (`edgekd.fit_recipe.final_train_config`).

One run distils STUDENT from the cached default teacher of the same seed (trained first when it is not
cached: `edgekd fit --seed N` trains its own teacher) with fit's recipe for digits (batch 16, SGD at
0.025, one-cycle, the epochs fit decides: 30 since small data train until the student has seen
`fit_recipe.SMALL_DATA_MIN_IMAGES_SEEN` images, 15 before; Hinton KD, no augmentation since the digits teacher
fails shifted and mirrored views), changed by `key=value` fields of `TrainConfig`, and prints one JSON
line: the student's and the teacher's test accuracy, the retention, the validation accuracy after each
epoch and the training's seconds. Appends the line to benchmarks/results/digits_final.jsonl with
`--record`.

    python benchmarks/digits_final.py lcnet_035 0 1                     # student, seed, torch threads
    python benchmarks/digits_final.py lcnet_035 0 1 ema_decay=0.99 --record
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "digits_final.jsonl"


def value(text: str):
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student")
    parser.add_argument("seed", type=int)
    parser.add_argument("threads", type=int)
    parser.add_argument("changes", nargs="*", help="TrainConfig fields, key=value")
    parser.add_argument("--record", action="store_true", help=f"append the line to {RESULTS}")
    args = parser.parse_args()
    changes = {k: value(v) for k, v in (c.split("=", 1) for c in args.changes)}

    from edgekd.catalog import build_model, load_teacher_recipe
    from edgekd.data import load_digits_splits
    from edgekd.distill.stage import DistillPlan, distil_student
    from edgekd.distill.trainer import accuracy, predict
    from edgekd.fit_config import FitConfig
    from edgekd.fit_recipe import make_train_config
    from edgekd.paths import default_cache_dir
    from edgekd.teachers import resolve_teacher

    torch.set_num_threads(args.threads)
    cache = default_cache_dir()
    data = load_digits_splits(32)
    teacher = resolve_teacher(None, None, data, cache_dir=cache, recipe=load_teacher_recipe(), seed=args.seed)
    teacher_test = accuracy(*predict(teacher.model, data.test))
    # fit decides no views on digits (the teacher fails them) and batch 16 for 1,259 images
    config = FitConfig.from_options(seed=args.seed, augment_shift=0, hflip=False)
    recipe = make_train_config(config, data.input_size, train_images=len(data.train))
    recipe = dataclasses.replace(recipe, accelerator="cpu", **changes)

    def make_student():
        torch.manual_seed(args.seed)
        return build_model(args.student, data.num_classes)

    started = time.perf_counter()
    result = distil_student(make_student, teacher.model, data, recipe, DistillPlan(), cache_dir=cache)
    seconds = time.perf_counter() - started
    test = accuracy(*predict(result.student, data.test))
    line = {
        "student": args.student,
        "seed": args.seed,
        "threads": args.threads,
        "changes": changes,
        "test": round(100 * test, 2),
        "teacher_test": round(100 * teacher_test, 2),
        "retention": round(100 * test / teacher_test, 1),
        "val_by_epoch": [round(100 * m.val_accuracy, 1) for m in result.history],
        "epochs": recipe.epochs,
        "batch": recipe.batch_size,
        "lr": recipe.lr,
        "seconds": round(seconds, 1),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(line), flush=True)
    if args.record:
        with RESULTS.open("a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
