"""edgekd's distillation recipe against a plain PyTorch KD loop (issue 15): the plain loop
(benchmarks/plain_kd.py) and edgekd's trainer side by side, then edgekd's default with one difference
at a time changed (toward the plain loop, back to the pre-issue-15 default, or beyond both).

Both sides distil mobilenetv3_small_050 from the SAME teacher (resnet18 trained 8 epochs by the plain
loop, cached per dataset), so the table isolates the student's recipe. edgekd's rows use the trainer,
loss and teacher-output cache as `edgekd fit` does, with the TrainConfig and DistillPlan fit builds
from its default options (`edgekd.fit_recipe.make_train_config`, `make_distill_plan`, `view_decision`):
SGD-Nesterov at 0.05 × batch / 128 (not below 0.025), batch 32 at 8 epochs (the largest of 64/32/16
that gives 1,500 optimizer steps), weight decay 5e-4, one-cycle, 4 replayed reflect-padded shift views
(flips when the teacher's classes survive mirroring), Hinton KD (T = 4, α = 0.9) with similarity-
preserving KD beside it (`fit_recipe.default_loss`: the teacher runs on every batch for its maps; a
row whose loss reads logits alone caches them per view). Every cached row fills its own fresh cache,
so its wall time includes the teacher's
work, as a first fit would. A results file written under another default keeps its plain rows and drops
the edgekd ones (a field the default gained since, at its old behaviour, changes nothing).

    python benchmarks/recipe.py --dataset eurosat32                      # every row, in ROWS order
    python benchmarks/recipe.py --dataset eurosat32 --rows plain-kd edgekd-kd
    python benchmarks/recipe.py --dataset digits --epochs 1 --limit 500  # a smoke run (its own JSON)
    python benchmarks/recipe.py --dataset eurosat32 --timing 2           # epoch-time ratio, alternated
    python benchmarks/recipe.py --dataset eurosat64 --timing 2 --timing-row kd-sp  # another row's ratio

Datasets: eurosat64 / eurosat32 (EuroSAT RGB at 64 px / resized to 32 px, 6,000 seeded random training
images, the 4,050-image test split), fashion3 (Fashion-MNIST, grey replicated to 3 channels and resized
to 32 px, 10,000 seeded random training images, 5,000 others for validation, the 10,000-image test
split) and digits (scikit-learn's, 32 px). Rows are written to benchmarks/results/recipe-<dataset>.json
as they finish; a re-run skips finished rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import re
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag")
FASHION_CLASSES += ("Ankle boot",)
DATASETS = ("eurosat32", "eurosat64", "fashion3", "digits")
TRAIN_IMAGES = {"eurosat32": 6000, "eurosat64": 6000, "fashion3": 10000, "digits": None}
FASHION_VAL_IMAGES = 5000
EPOCHS = TEACHER_EPOCHS = 8
TEACHER_ARCH, STUDENT_ARCH = "resnet18", "mobilenetv3_small_050"
PLAIN_LR, PLAIN_TEACHER_LR, PLAIN_BATCH, PLAIN_WEIGHT_DECAY = 0.05, 0.1, 128, 5e-4
EMA_DECAY = 0.99  # ~100-step memory: the runs here are 300-800 steps long

# Each row is edgekd's default with the named fields changed: `config` (TrainConfig; a new batch size
# or optimizer gets fit's learning rate for it, `default_lr`, unless the row names one), `augmentation`
# (Augmentation; draws "epochs": a fresh view every epoch), `loss` (the loss's parameters), `specs`
# (the loss terms), `cached` (the teacher-output cache), `teacher` (False: no teacher, loss ce).
# "plain" rows run plain_kd.fit.
TOWARD_PLAIN = {  # the differences left between edgekd's default and the plain loop, one at a time
    "batch128": {"config": {"batch_size": 128}},
    "fresh-views": {"augmentation": {"draws": "epochs"}},
    "live-teacher": {"cached": False},
}
BEYOND_PLAIN = {  # what the default used to do, and what neither side does
    "zero-pad": {"augmentation": {"padding": "zeros"}},  # the shift's fill before issue 16: the mean colour
    "adamw": {"config": {"optimizer": "adamw"}},  # the default before issue 15: AdamW, lr 3e-3 at batch 64
    "wd1e-4": {"config": {"weight_decay": 1e-4}},  # the default's weight decay before issue 15
    "no-hflip": {"augmentation": {"hflip": False}},  # before issue 15 flips were off unless asked for
    "batch32": {"config": {"batch_size": 32}},
    # around batch 32 (twice the steps of the default at the same peak lr), the best of the screen above
    "batch16": {"config": {"batch_size": 16}},
    "batch32-lr1.5": {"config": {"batch_size": 32, "lr": PLAIN_LR * 64 / PLAIN_BATCH * 1.5}},
    "batch32-t2": {"config": {"batch_size": 32}, "loss": {"temperature": 2.0}},
    "batch32-shift4": {"config": {"batch_size": 32}, "augmentation": {"max_shift": 4}},  # the plain loop's
    "batch32-dist-t2": {
        "config": {"batch_size": 32},
        "specs": ("ce", "dist:2"),
        "loss": {"temperature": 2.0},
    },
    # Feature and relation terms beside KD (the teacher runs live: its cache holds logits only), each
    # at its paper's weight: attention maps (β = 1000), batch similarity (γ = 3000), FitNets hints.
    "kd-at": {"specs": ("kd", "at"), "cached": False},
    "kd-sp": {"specs": ("kd", "sp"), "cached": False},
    "kd-fitnet": {"specs": ("kd", "fitnet"), "cached": False},
    "alpha1": {"loss": {"alpha": 1.0}},
    "t2": {"loss": {"temperature": 2.0}},
    "dist": {"specs": ("ce", "dist:2")},  # DIST's CIFAR setting: CE + 2·(inter + intra), τ = 4
    "dist-t2": {"specs": ("ce", "dist:2"), "loss": {"temperature": 2.0}},
    "dist-t1": {"specs": ("ce", "dist"), "loss": {"temperature": 1.0}},  # DIST's ImageNet setting
    # logit standardisation (Sun et al. 2024): its CIFAR-100 setting (CE 0.1, KD 9, T = 2), and the default's
    "ls": {"specs": ("ce:0.1", "kd:9"), "loss": {"alpha": 1.0, "temperature": 2.0, "standardize": True}},
    "ls-default": {"loss": {"standardize": True}},
    # how fragile the default learning rate is: half and double fit's (SGD: 0.025 at batch 64)
    "lr-half": {"config": {"lr": PLAIN_LR * 64 / PLAIN_BATCH / 2}},
    "lr-double": {"config": {"lr": PLAIN_LR * 64 / PLAIN_BATCH * 2}},
    "ema": {"config": {"ema_decay": EMA_DECAY}},
    "label-smoothing": {"loss": {"label_smoothing": 0.1}},
}
ROWS = {
    "plain-kd": {"plain": True},
    "plain-scratch": {"plain": True, "teacher": False},
    "edgekd-kd": {},
    "edgekd-scratch": {"teacher": False},
    # Run-to-run spread: another student initialisation and batch order, nothing else changed.
    "plain-kd-seed1": {"plain": True, "seed": 1},
    "plain-scratch-seed1": {"plain": True, "teacher": False, "seed": 1},
    "edgekd-kd-seed1": {"config": {"seed": 1}},
    "edgekd-scratch-seed1": {"teacher": False, "config": {"seed": 1}},
    **TOWARD_PLAIN,
    **BEYOND_PLAIN,
}


def row_spec(name: str) -> dict | None:
    """A row of ROWS, or `<row>-seed<N>`: that row again with another student initialisation and batch
    order (the seed of the plain loop, or of fit's TrainConfig), so any row can be repeated over seeds."""
    if name in ROWS:
        return ROWS[name]
    base, _, seed = name.rpartition("-seed")
    if base not in ROWS or not seed.isdigit():
        return None
    row = ROWS[base]
    if row.get("plain"):
        return {**row, "seed": int(seed)}
    return {**row, "config": {**row.get("config", {}), "seed": int(seed)}}


def same_default(recorded: dict, current: dict) -> bool:
    """Whether fit's default recorded with a results file is the current one. A field only one side
    records was added to TrainConfig or DistillPlan since: it defaults to what training did before it
    existed (mixup 0, no SyncBatchNorm, ...), so it changes no row measured without it."""
    for key in recorded.keys() & current.keys():
        old, new = recorded[key], current[key]
        if isinstance(old, dict) and isinstance(new, dict):
            if not same_default(old, new):
                return False
        elif old != new:
            return False
    return True


def cache_root() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE_DIR") or ROOT / "benchmarks" / ".cache")


def eurosat(input_size: int):
    """EuroSAT RGB (extracted by distill_eurosat's `eurosat_folder`) decoded once at `input_size`."""
    from distill_eurosat import eurosat_folder

    from edgekd.data import decode_once, load_image_folder

    return decode_once(load_image_folder(eurosat_folder(), input_size), cache_root())


def _idx(path: Path):
    """An IDX file (LeCun's MNIST format): a big-endian header of dimension sizes, then uint8 data."""
    import numpy as np

    with gzip.open(path) as f:
        raw = f.read()
    dims = struct.unpack(f">{raw[3]}I", raw[4 : 4 + 4 * raw[3]])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def fashion3(train_images: int):
    """Fashion-MNIST, grey replicated to 3 channels, 32 px: `train_images` of the 60,000 training images
    (seeded), the next 5,000 of that order for validation, the 10,000 test images."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import TensorDataset

    from edgekd.data import IMAGENET_MEAN, IMAGENET_STD, DataSplits
    from edgekd.preprocessing import Preprocessing

    files = [
        FASHION_MNIST / f"{s}-{k}-idx{d}-ubyte.gz"
        for s in ("train", "t10k")
        for k, d in (("images", 3), ("labels", 1))
    ]
    if not all(f.is_file() for f in files):
        raise SystemExit(
            f"Fashion-MNIST is not under {FASHION_MNIST}: install it with "
            "`apt-get update && apt-get install -y dataset-fashion-mnist`"
        )
    train_x, train_y, test_x, test_y = (_idx(f) for f in files)
    order = np.random.default_rng(0).permutation(len(train_y))
    train, val = order[:train_images], order[train_images : train_images + FASHION_VAL_IMAGES]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def split(images, labels):
        grey = torch.from_numpy(images.astype(np.float32) / 255)[:, None]
        grey = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
        return TensorDataset(
            ((grey.expand(-1, 3, -1, -1) - mean) / std).contiguous(),
            torch.from_numpy(labels.astype(np.int64)),
        )

    digest = hashlib.sha256(json.dumps(["fashion3", 32, train_images, FASHION_VAL_IMAGES, 0]).encode())
    for array in (train_x, train_y, test_x, test_y):
        digest.update(array.tobytes())
    return DataSplits(
        "fashion3", split(train_x[train], train_y[train]), split(train_x[val], train_y[val]),
        split(test_x, test_y), Preprocessing(32, IMAGENET_MEAN, IMAGENET_STD, FASHION_CLASSES),
        digest.hexdigest(),
    )  # fmt: skip


def load(dataset: str, limit: int | None):
    from edgekd.data import load_digits_splits, with_train_subset

    if dataset == "fashion3":
        return fashion3(limit or 60000 - FASHION_VAL_IMAGES)
    data = load_digits_splits(32) if dataset == "digits" else eurosat(int(dataset.removeprefix("eurosat")))
    return with_train_subset(data, limit, seed=0) if limit else data


def plain_teacher(data, train_x, train_y, epochs: int):
    """resnet18 trained by the plain loop (CE, lr 0.1), cached per data and epochs."""
    import plain_kd
    import torch

    from edgekd.catalog import build_model
    from edgekd.checkpoint import ModelInfo, load_model, save_model

    key = hashlib.sha256(
        json.dumps([data.fingerprint, TEACHER_ARCH, epochs, PLAIN_TEACHER_LR, torch.__version__]).encode()
    ).hexdigest()[:20]
    path = cache_root() / "recipe-teachers" / f"{TEACHER_ARCH}-{key}.safetensors"
    if path.exists():
        return load_model(path)[0].eval(), json.loads(path.with_suffix(".json").read_text())
    torch.manual_seed(0)
    started = time.perf_counter()
    teacher, seconds = plain_kd.fit(
        build_model(TEACHER_ARCH, data.num_classes), train_x, train_y, epochs, PLAIN_TEACHER_LR
    )
    info = {"epochs": epochs, "lr": PLAIN_TEACHER_LR, "wall_seconds": round(time.perf_counter() - started, 1)}
    info["epoch_seconds"] = seconds
    save_model(path, teacher, ModelInfo(TEACHER_ARCH, data.preprocessing))
    from edgekd._io import write_json_atomic

    write_json_atomic(path.with_suffix(".json"), info)
    return teacher.eval(), info


def edgekd_default(epochs: int, data, teacher):
    """The TrainConfig and DistillPlan `edgekd fit` builds from its default options for `teacher` on
    `data` (the teacher decides whether flips and shifts are on, `fit_recipe.view_decision`)."""
    from edgekd.fit_config import FitConfig
    from edgekd.fit_recipe import make_distill_plan, make_train_config, view_decision, with_loss
    from edgekd.targets import get_target

    fit = with_loss(FitConfig.from_options(epochs=epochs), len(data.train))
    plan = make_distill_plan(fit, [get_target(fit.target)])
    views = view_decision(fit, teacher, data)
    return make_train_config(fit, data.input_size, views, train_images=len(data.train)), plan


def edgekd_row(row: dict, data, teacher, default) -> dict:
    """edgekd's default (the `edgekd_default` pair) with `row`'s changes, trained by
    `edgekd.distill.trainer.train`."""
    import torch

    from edgekd.catalog import build_model
    from edgekd.distill.cache import TeacherOutputCache
    from edgekd.distill.losses import parse_loss_specs
    from edgekd.distill.trainer import default_lr, train

    config, plan = default
    epochs = config.epochs
    augmentation = dataclasses.replace(
        config.augmentation,
        **{k: epochs if v == "epochs" else v for k, v in row.get("augmentation", {}).items()},
    )
    changes = dict(row.get("config", {}))
    if "lr" not in changes and ("batch_size" in changes or "optimizer" in changes):
        changes["lr"] = default_lr(
            changes.get("optimizer", config.optimizer), changes.get("batch_size", config.batch_size)
        )
    config = dataclasses.replace(config, augmentation=augmentation, **changes)
    distilling = row.get("teacher", True)
    specs = row.get("specs", plan.loss) if distilling else ("ce",)
    params = {"temperature": plan.temperature, "alpha": plan.alpha} if distilling else {}
    params.update(row.get("loss", {}))
    loss = parse_loss_specs(specs, **params)
    torch.manual_seed(config.seed)  # as fit's make_student
    student = build_model(STUDENT_ARCH, data.num_classes)
    # fit's rule (DistillPlan.caches_teacher): a cache of logits only for a loss that reads logits alone
    cached = distilling and row.get("cached", dataclasses.replace(plan, loss=tuple(specs)).caches_teacher)
    with tempfile.TemporaryDirectory(dir=cache_root()) as fresh_cache:
        started = time.perf_counter()
        cache, fill_seconds = None, 0.0
        if cached:
            cache = TeacherOutputCache.open(
                Path(fresh_cache), teacher, data.fingerprint, augmentation, len(data.train), data.num_classes
            )
            cache.fill(teacher, data.train, augmentation)
            fill_seconds = time.perf_counter() - started
        history = train(
            student,
            data,
            config,
            loss=loss,
            teacher=teacher if distilling else None,
            teacher_cache=cache,
            description=f"{STUDENT_ARCH} {'+'.join(specs)}",
        )
        wall = time.perf_counter() - started
    return {
        "student": student,
        "wall_seconds": wall,
        "cache_fill_seconds": round(fill_seconds, 1),
        "train_epoch_seconds": [round(m.seconds, 2) for m in history],
        "val_accuracy": [m.val_accuracy for m in history],
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "augmentation"},
        "augmentation": dataclasses.asdict(augmentation),
        "loss": {"specs": list(specs), **params},
        "teacher_cache": bool(cached),
    }


def plain_row(row: dict, data, teacher, train_x, train_y, epochs: int) -> dict:
    import plain_kd
    import torch

    from edgekd.catalog import build_model

    seed = row.get("seed", 0)
    torch.manual_seed(seed)
    student = build_model(STUDENT_ARCH, data.num_classes)
    started = time.perf_counter()
    teaching = teacher if row.get("teacher", True) else None
    student, seconds = plain_kd.fit(student, train_x, train_y, epochs, PLAIN_LR, teaching, seed=seed)
    return {
        "student": student,
        "wall_seconds": time.perf_counter() - started,
        "train_epoch_seconds": [round(s, 2) for s in seconds],
        "recipe": "benchmarks/plain_kd.py: SGD-Nesterov lr 0.05, wd 5e-4, batch 128, one-cycle 15 % warm-up, "
        "fresh 4-px reflect crop + flip per epoch"
        + (", live teacher, KD T=4 α=0.9" if teaching is not None else ", CE"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=DATASETS, default="eurosat32")
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS)
    parser.add_argument("--limit", type=int, help="training images (default: the dataset's, see above)")
    # One: on a shared 2-core machine under load, 2 intra-op threads spin waiting for each other (a plain
    # KD row that takes 100 s with 1 thread had not finished after 15 min with 2).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--timing",
        type=int,
        metavar="N",
        help="instead of the table: time plain-kd and edgekd-kd alternately N times each in this one "
        "process and write recipe-<dataset>-timing.json (the ratio the issue bounds at 1.3x)",
    )
    parser.add_argument(
        "--timing-row",
        default="edgekd-kd",
        help="the edgekd row --timing alternates with plain-kd (another than edgekd-kd writes "
        "recipe-<dataset>-timing-<row>.json)",
    )
    parser.add_argument("--tag", help="write recipe-<dataset>-<tag>.json (parallel runs of one dataset)")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print the acceptance table of every dataset's results (Markdown)",
    )
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(), ablation(), sep="\n\n")
        return 0
    if args.tag and args.tag.startswith("timing"):
        raise SystemExit(f"--tag {args.tag}: recipe-<dataset>-timing*.json are --timing's; pick another")
    unknown = [r for r in [*args.rows, args.timing_row] if row_spec(r) is None]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; valid: {', '.join(ROWS)}, each also as <row>-seed<N>")

    import logging

    import torch

    from edgekd._io import write_json_atomic
    from edgekd.data import stack
    from edgekd.distill.trainer import accuracy, predict

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    limit = args.limit if args.limit is not None else TRAIN_IMAGES[args.dataset]
    name = f"recipe-{args.dataset}"
    if (args.epochs, args.teacher_epochs, limit) != (EPOCHS, TEACHER_EPOCHS, TRAIN_IMAGES[args.dataset]):
        name += f"-{args.epochs}ep-{args.teacher_epochs}tep-{limit}img"
    if args.tag:
        name += f"-{args.tag}"
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    results = json.loads(out.read_text()) if out.exists() else {"rows": {}}
    cache_root().mkdir(parents=True, exist_ok=True)

    data = load(args.dataset, limit)
    train_x, train_y = stack(data.train)
    teacher, teacher_info = plain_teacher(data, train_x, train_y, args.teacher_epochs)
    test_logits_teacher, test_labels = predict(teacher, data.test)
    config, plan = edgekd_default(args.epochs, data, teacher)
    # through JSON, so tuples read back from the file as lists compare equal
    default = json.loads(json.dumps({**dataclasses.asdict(config), "plan": dataclasses.asdict(plan)}))
    recorded = results.get("edgekd_default")
    if recorded is not None and not same_default(recorded, default):
        # edgekd rows are changes from fit's default: those measured from an older default are not reused
        # a scratch row reads only the training config, a distilling row the plan too
        without_plan = ({k: v for k, v in d.items() if k != "plan"} for d in (recorded, default))
        config_changed = not same_default(*without_plan)
        stale = [
            name
            for name, row in ((n, row_spec(n) or {}) for n in results["rows"])
            if not row.get("plain") and (config_changed or row.get("teacher", True))
        ]
        if stale:
            print(f"fit's default changed since {out.name} was written: dropping its rows {', '.join(stale)}")
        results["rows"] = {k: v for k, v in results["rows"].items() if k not in stale}
    results.update(
        dataset=args.dataset,
        images={"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        input_size=data.input_size,
        epochs=args.epochs,
        teacher={
            "arch": TEACHER_ARCH,
            "test_accuracy": accuracy(test_logits_teacher, test_labels),
            **teacher_info,
        },
        student=STUDENT_ARCH,
        edgekd_default=default,
        threads=args.threads,
    )
    if args.timing:  # its own file: the rows' file is neither rewritten nor pruned of stale rows
        return time_epochs(args, data, teacher, train_x, train_y, results, (config, plan))
    write_json_atomic(out, results)
    for row_name in args.rows:
        if row_name in results["rows"]:
            print(f"{row_name}: done earlier, skipped")
            continue
        row = row_spec(row_name)
        if row.get("plain"):
            info = plain_row(row, data, teacher, train_x, train_y, args.epochs)
        else:
            info = edgekd_row(row, data, teacher, (config, plan))
        logits, labels = predict(info.pop("student"), data.test)
        info["test_accuracy"] = accuracy(logits, labels)
        info["teacher_agreement"] = float((logits.argmax(1) == test_logits_teacher.argmax(1)).float().mean())
        info["wall_seconds"] = round(info["wall_seconds"], 1)
        info["seconds_per_epoch"] = round(info["wall_seconds"] / args.epochs, 2)
        info["changes"] = {k: v for k, v in row.items() if k != "plain"}
        results["rows"][row_name] = info
        write_json_atomic(out, results)
        print(
            f"{row_name}: {100 * info['test_accuracy']:.2f} % test, {info['wall_seconds']:.0f} s", flush=True
        )
    print_table(results)
    return 0


def time_epochs(args, data, teacher, train_x, train_y, results: dict, default) -> int:
    """plain-kd and edgekd-kd, alternated so that both see the same load on a shared machine; the
    edgekd wall time includes filling its teacher-output cache and the validation after every epoch."""
    from statistics import median

    from edgekd._io import write_json_atomic

    walls: dict[str, list[float]] = {"plain-kd": [], args.timing_row: []}
    for attempt in range(args.timing):
        for name in walls:
            row = row_spec(name)
            if row.get("plain"):
                info = plain_row(row, data, teacher, train_x, train_y, args.epochs)
            else:
                info = edgekd_row(row, data, teacher, default)
            walls[name].append(round(info["wall_seconds"] / args.epochs, 2))
            print(f"attempt {attempt + 1}: {name} {walls[name][-1]:.2f} s/epoch", flush=True)
    ratios = [e / p for p, e in zip(walls["plain-kd"], walls[args.timing_row], strict=True)]
    timing = {
        "dataset": results["dataset"],
        "epochs": args.epochs,
        "threads": args.threads,
        "seconds_per_epoch": walls,
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(median(ratios), 3),
        "edgekd_default": results["edgekd_default"],
    }
    suffix = "" if args.timing_row == "edgekd-kd" else f"-{args.timing_row}"
    out = ROOT / "benchmarks" / "results" / f"recipe-{results['dataset']}-timing{suffix}.json"
    write_json_atomic(out, timing)
    print(
        f"{args.timing_row} / plain-kd epoch time: {', '.join(f'{r:.2f}' for r in ratios)} "
        f"(median {median(ratios):.2f})"
    )
    return 0


def _mean(rows: dict, names: tuple[str, ...]) -> tuple[float | None, str]:
    found = [rows[n] for n in names if n in rows]
    if not found:
        return None, "-"
    accuracies = [100 * r["test_accuracy"] for r in found]
    cell = " / ".join(f"{a:.2f} ({r['wall_seconds']:.0f} s)" for a, r in zip(accuracies, found, strict=True))
    return sum(accuracies) / len(accuracies), cell


def summary() -> str:
    """Issue 15's acceptance table: per dataset, edgekd's default KD student against the plain loop's
    KD (+1 point needed) and scratch (+3) students, every seed's cell with its wall time, and the mean."""
    lines = [
        "| dataset | teacher | plain KD | plain scratch | edgekd KD | edgekd scratch | edgekd KD − plain KD "
        "| edgekd KD − plain scratch |",
        "| --- | ---: | --- | --- | --- | --- | ---: | ---: |",
    ]
    for dataset in ("eurosat64", "eurosat32", "fashion3"):
        path = ROOT / "benchmarks" / "results" / f"recipe-{dataset}.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        rows = results["rows"]
        cells = {
            name: _mean(rows, tuple(n for n in rows if n == name or re.fullmatch(rf"{name}-seed\d+", n)))
            for name in ("plain-kd", "plain-scratch", "edgekd-kd", "edgekd-scratch")
        }
        edgekd, plain, scratch = (cells[n][0] for n in ("edgekd-kd", "plain-kd", "plain-scratch"))
        gaps = [
            f"{edgekd - other:+.2f}" if None not in (edgekd, other) else "-" for other in (plain, scratch)
        ]
        lines.append(
            f"| {dataset} | {100 * results['teacher']['test_accuracy']:.2f} | "
            + " | ".join(cells[n][1] for n in ("plain-kd", "plain-scratch", "edgekd-kd", "edgekd-scratch"))
            + f" | {gaps[0]} | {gaps[1]} |"
        )
    return "\n".join(lines)


def ablation(dataset: str = "eurosat32") -> str:
    """Issue 15's ablation table: each row's change from edgekd's default and its effect in points."""
    results = json.loads((ROOT / "benchmarks" / "results" / f"recipe-{dataset}.json").read_text())
    rows = results["rows"]
    reference = rows["edgekd-kd"]["test_accuracy"]
    lines = [
        "| row | change from edgekd's default | test % | effect (pts) | wall s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        if row.get("changes", {}).get("plain") or name.startswith("plain"):
            continue
        change = json.dumps(row.get("changes", {}), ensure_ascii=False) if name != "edgekd-kd" else "—"
        lines.append(
            f"| {name} | `{change}` | {100 * row['test_accuracy']:.2f} | "
            f"{100 * (row['test_accuracy'] - reference):+.2f} | {row['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)


def print_table(results: dict) -> None:
    rows = results["rows"]
    print(
        f"\n{results['dataset']} ({results['images']['train']} training images, {results['epochs']} epochs); "
        f"teacher {results['teacher']['arch']} {100 * results['teacher']['test_accuracy']:.2f} % test"
    )
    reference = {k: rows[k]["test_accuracy"] for k in ("plain-kd", "edgekd-kd") if k in rows}
    print(
        f"{'row':16s} {'test %':>7s} {'vs plain-kd':>11s} {'vs edgekd-kd':>12s} {'wall s':>7s} "
        f"{'s/epoch':>8s}"
    )
    for name, row in rows.items():
        deltas = [
            f"{100 * (row['test_accuracy'] - reference[k]):+.2f}" if k in reference else "-"
            for k in ("plain-kd", "edgekd-kd")
        ]
        print(
            f"{name:16s} {100 * row['test_accuracy']:7.2f} {deltas[0]:>11s} {deltas[1]:>12s} "
            f"{row['wall_seconds']:7.0f} {row['seconds_per_epoch']:8.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
