"""Distillation on EuroSAT (real satellite images, 10 classes, 64 px): every loss and scheme on the same
teacher/student pair, with the same recipe and epochs, plus quantization-aware distillation.

The teacher (resnet18, trained here once and cached, since no pretrained teacher can be downloaded) and
the student (mobilenetv3_small_100, under 1/10 of the teacher's MACs) stay fixed; each row changes one
thing: the loss, whether the teacher's logits come from the live model or the teacher-output cache,
or the scheme (born-again self-distillation, a teacher-assistant chain). Rows are written to
benchmarks/results/distill_eurosat.json as they finish, and a re-run skips finished rows, so the
benchmark can be stopped and continued.

    python benchmarks/distill_eurosat.py                  # every row
    python benchmarks/distill_eurosat.py --rows scratch kd-live kd-cached
    python benchmarks/distill_eurosat.py --epochs 1 --limit 500    # a smoke run (its own JSON)
    python benchmarks/distill_eurosat.py --epochs 16 --rows scratch kd-cached   # a longer recipe
    python benchmarks/distill_eurosat.py --student ghostnet_100 --augmented-teacher --rows scratch kd-cached
    python benchmarks/distill_eurosat.py --student mobilenetv3_small_050 --assistant auto \
        --rows scratch kd-cached teacher-assistant     # a >10x capacity gap, the assistant fit picks

The recipe trains on a fixed, seeded random subset of the training split (6,000 of 18,900 images; every
row the same subset) for 8 epochs and tests on the whole 4,050-image test split: on this machine's two
cores the full split would take about three times as long per row, and the table has 14 rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = Path(
    os.environ.get("EDGEKD_EUROSAT_ARCHIVE") or ROOT.parent / "shared" / "datasets" / "eurosat-rgb.tar.gz"
)
ARCHIVE_SHA256 = "ab0be06997063ed898c9c4a3b00c0a7f6a34cb9303fe4c02a3e5e2555fe8d879"
INPUT_SIZE = 64
EPOCHS, TRAIN_IMAGES = 8, 6000
TEACHER_ARCH, STUDENT_ARCH, ASSISTANT_ARCH = "resnet18", "mobilenetv3_small_100", "resnet10t"

# Each row: loss terms for the student, and how the teacher is used.
ROWS = {
    "scratch": {"loss": ["ce"]},
    "kd-live": {"loss": ["kd"]},
    "kd-cached": {"loss": ["kd"], "cached": True, "keep": True},  # kept: see kd_student
    "logit_mse": {"loss": ["logit_mse", "ce"], "cached": True},
    "dkd": {"loss": ["dkd", "ce"], "cached": True},
    "fitnet": {"loss": ["kd", "fitnet:0.5"]},
    "at": {"loss": ["kd", "at"]},
    "rkd": {"loss": ["kd", "rkd"]},
    "sp": {"loss": ["kd", "sp"]},
    "mutual": {"loss": ["mutual"], "scheme": "mutual"},
    "born-again": {"loss": ["kd"], "scheme": "born-again"},
    "teacher-assistant": {"loss": ["kd"], "scheme": "teacher-assistant"},
    "int8": {"scheme": "quantization"},
    "epoch-cost": {"scheme": "epoch-cost"},
}
EPOCH_COST_REPEATS = 5
TEACHER_RECIPE_FIELDS = dict(epochs=10, batch_size=64, lr=3e-3, weight_decay=5e-4, label_smoothing=0.1)
# The same teacher trained 20 epochs on replayed shift/flip views (--augmented-teacher) reaches
# 89.90 % instead of 85.48 %. It distils mobilenetv3_small_100 worse (kd at T=4: 74.69 %, T=1:
# 76.10 %; results/distill_eurosat-augmented-teacher.json) but ghostnet_100 better: 85.53 % against
# 82.86 % from the plain teacher and 82.22 % from scratch
# (results/distill_eurosat-ghostnet_100-augmented-teacher.json).
AUGMENTED_TEACHER_RECIPE_FIELDS = dict(
    epochs=20, batch_size=64, lr=3e-3, weight_decay=5e-4, label_smoothing=0.1, augment_draws=8, hflip=True
)
QAT_EPOCHS = 2


def cache_root() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE_DIR") or ROOT / "benchmarks" / ".cache")


def eurosat_folder() -> Path:
    """EuroSAT RGB's ImageFolder (train/valid/test), extracted into the cache once, checksum verified;
    or the folder EDGEKD_EUROSAT_FOLDER names (benchmarks/eurosat_travel.py's copy on another machine)."""
    if os.environ.get("EDGEKD_EUROSAT_FOLDER"):
        return Path(os.environ["EDGEKD_EUROSAT_FOLDER"])
    target = cache_root() / "datasets"
    root = target / "eurosat-rgb"
    if not (root / "train").is_dir():
        if not ARCHIVE.is_file():
            raise SystemExit(f"{ARCHIVE}: no EuroSAT archive; set EDGEKD_EUROSAT_ARCHIVE to its path")
        digest = hashlib.sha256(ARCHIVE.read_bytes()).hexdigest()
        if digest != ARCHIVE_SHA256:
            raise SystemExit(f"{ARCHIVE}: sha256 {digest} is not the published {ARCHIVE_SHA256}")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as archive:
            archive.extractall(target, filter="data")
    return root


def eurosat(limit: int | None = None, per_class: int | None = None):
    """EuroSAT RGB extracted into the cache (checksum verified) and decoded once; with `limit`, a seeded
    random training subset of that many images, with `per_class`, that many of each class."""
    from edgekd.data import decode_once, load_image_folder, with_train_subset, with_train_subset_per_class

    data = decode_once(load_image_folder(eurosat_folder(), INPUT_SIZE), cache_root())
    if per_class:
        return with_train_subset_per_class(data, per_class, seed=0)
    return with_train_subset(data, limit, seed=0) if limit else data


def teacher_recipe(augmented: bool = False):
    from edgekd.catalog import TeacherRecipe

    return TeacherRecipe(
        TEACHER_ARCH, **(AUGMENTED_TEACHER_RECIPE_FIELDS if augmented else TEACHER_RECIPE_FIELDS)
    )


def student_recipe(epochs: int = EPOCHS):
    """The recipe of every row: AdamW, one-cycle, 4 replayed shift/flip views."""
    from edgekd.augment import Augmentation
    from edgekd.distill.trainer import TrainConfig

    augmentation = Augmentation(draws=4, max_shift=4)
    return TrainConfig(
        epochs=epochs, batch_size=64, lr=3e-3, weight_decay=1e-4, seed=0, augmentation=augmentation
    )


def cached_teacher(data, augmented: bool = False, accelerator: str = "cpu"):
    """The resnet18 teacher trained on `data` once and cached (on `accelerator`, which is no part of
    the cache key), on the CPU."""
    from edgekd.teachers import train_cached_teacher

    return train_cached_teacher(
        data, teacher_recipe(augmented), cache_root(), seed=0, accelerator=accelerator
    ).model.eval()


def summarize(history) -> dict:
    return {
        "epoch_seconds": sum(m.seconds for m in history) / len(history),
        "history": [dataclasses.asdict(m) for m in history],
    }


def distil(arch: str, loss_specs: list[str], teacher, data, config, cached: bool, seed: int = 0):
    """A fresh `arch` (seeded) distilled from `teacher` with `loss_specs`; with `cached`, the teacher's
    outputs come from the teacher-output cache (filled first if needed, its cost reported apart)."""
    import torch

    from edgekd.catalog import build_model
    from edgekd.distill.cache import TeacherOutputCache
    from edgekd.distill.losses import parse_loss_specs
    from edgekd.distill.trainer import train

    torch.manual_seed(seed)
    student = build_model(arch, data.num_classes)
    augmentation = config.augmentation
    cache = None
    if cached and teacher is not None:
        cache = TeacherOutputCache.open(
            cache_root(), teacher, data.fingerprint, augmentation, len(data.train), data.num_classes
        )
    started = time.perf_counter()
    fill_seconds = 0.0
    if cache is not None and not cache.complete:
        cache.fill(teacher, data.train, augmentation)
        fill_seconds = time.perf_counter() - started
    history = train(
        student,
        data,
        dataclasses.replace(config, seed=seed),
        loss=parse_loss_specs(loss_specs),
        teacher=teacher,  # run only when the loss reads it; always used for agreement and KL
        teacher_cache=cache,
        description=f"{arch} {'+'.join(loss_specs)}",
    )
    return student, {**summarize(history), "cache_fill_seconds": round(fill_seconds, 1)}


def kd_student(
    data, teacher, config, arch: str = STUDENT_ARCH, augmented_teacher: bool = False, loss=("kd",)
):
    """The kd-cached row's student, distilled once and kept in the cache (the int8 row and
    benchmarks/export_eurosat.py start from it); with another `loss` (benchmarks/search_eurosat.py's
    oracle under fit's default, kd + sp), that loss's student, cached beside it. The teacher's logits
    come from its cache for kd alone: a feature loss runs the teacher on every batch, as fit does."""
    from edgekd._io import write_json_atomic
    from edgekd.checkpoint import ModelInfo, load_model, save_model
    from edgekd.teachers import teacher_cache_key

    key = hashlib.sha256(
        json.dumps(
            {
                "teacher": teacher_cache_key(data, teacher_recipe(augmented_teacher), 0),
                "recipe": dataclasses.asdict(config),
                "student": arch,
                "loss": list(loss),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:20]
    path = cache_root() / "students" / f"{arch}-{'+'.join(loss)}-{key}.safetensors"
    if path.exists():
        return load_model(path)[0], json.loads(path.with_suffix(".json").read_text())
    student, info = distil(arch, list(loss), teacher, data, config, cached=tuple(loss) == ("kd",))
    model_info = ModelInfo(arch, data.preprocessing)
    save_model(path, student, model_info)
    write_json_atomic(path.with_suffix(".json"), info)
    return student.eval(), info


def fit_assistant(student_arch: str, num_classes: int) -> str:
    """The teacher assistant `fit --scheme assistant` picks for `student_arch` under the resnet18
    teacher: the catalog model closest in log MACs to the geometric mean of the two."""
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model, load_students
    from edgekd.search import assess, choose_assistant
    from edgekd.targets import get_target

    catalog = assess(load_students(), [get_target("host")], INPUT_SIZE, num_classes)
    student = next(a for a in catalog if a.candidate.arch == student_arch)
    teacher_macs = analyze(build_model(TEACHER_ARCH, num_classes), INPUT_SIZE).macs
    pick = choose_assistant(catalog, student, teacher_macs)
    if pick.candidate.kwargs:
        raise SystemExit(f"the assistant {pick.candidate.name} needs timm kwargs {pick.candidate.kwargs}")
    return pick.candidate.arch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--limit", type=int, default=TRAIN_IMAGES, help="use only this many training images")
    parser.add_argument("--student", default=STUDENT_ARCH, help="the student architecture (timm name)")
    parser.add_argument(
        "--augmented-teacher",
        action="store_true",
        help="distil from the teacher trained 20 epochs on shift/flip views (its own JSON)",
    )
    parser.add_argument(
        "--assistant",
        default=ASSISTANT_ARCH,
        help=f"the teacher-assistant row's assistant (default {ASSISTANT_ARCH}); auto: the one `fit "
        "--scheme assistant` picks from models/students.yaml (edgekd.search.choose_assistant)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.rows) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; valid: {', '.join(ROWS)}")

    import logging

    import torch

    from edgekd._io import write_json_atomic
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model
    from edgekd.distill.schemes import born_again, mutual_learning, teacher_assistant_chain
    from edgekd.distill.trainer import accuracy, predict

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(os.cpu_count() or 1)
    # Another recipe is another table: its rows go to their own JSON, named by the recipe.
    student_arch = args.student
    default = args.epochs == EPOCHS and args.limit == TRAIN_IMAGES
    name = "distill_eurosat" if default else f"distill_eurosat-{args.epochs}ep-{args.limit}img"
    if student_arch != STUDENT_ARCH:
        name += f"-{student_arch}"
    if args.augmented_teacher:
        name += "-augmented-teacher"
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    results = json.loads(out.read_text()) if out.exists() else {"rows": {}}

    data = eurosat(args.limit)
    recipe = teacher_recipe(args.augmented_teacher)
    teacher = cached_teacher(data, args.augmented_teacher)
    test_logits_teacher, test_labels = predict(teacher, data.test)
    assistant_arch = (
        fit_assistant(student_arch, data.num_classes) if args.assistant == "auto" else args.assistant
    )
    archs = (TEACHER_ARCH, student_arch, assistant_arch)
    macs = {a: analyze(build_model(a, data.num_classes), INPUT_SIZE).macs for a in archs}
    results["teacher"] = {
        "arch": TEACHER_ARCH,
        "test_accuracy": accuracy(test_logits_teacher, test_labels),
        "macs": macs[TEACHER_ARCH],
        "recipe": dataclasses.asdict(recipe),
    }
    params = {a: sum(p.numel() for p in build_model(a, data.num_classes).parameters()) for a in archs}
    results["student"] = {
        "arch": student_arch,
        "macs": macs[student_arch],
        "mac_ratio": macs[student_arch] / macs[TEACHER_ARCH],
        "params": params[student_arch],
        "teacher_params_ratio": params[TEACHER_ARCH] / params[student_arch],
    }
    config = student_recipe(args.epochs)
    results["recipe"] = dataclasses.asdict(config)

    def evaluate(model) -> dict:
        logits, labels = predict(model, data.test)
        return {
            "test_accuracy": accuracy(logits, labels),
            "teacher_agreement": float((logits.argmax(1) == test_logits_teacher.argmax(1)).float().mean()),
        }

    def fresh(arch: str, seed: int = 0):
        torch.manual_seed(seed)
        return build_model(arch, data.num_classes)

    # A teacher-assistant row through another assistant than the default is its own row.
    row_names = {
        name: f"{name}:{assistant_arch}"
        if name == "teacher-assistant" and assistant_arch != ASSISTANT_ARCH
        else name
        for name in args.rows
    }
    for name in args.rows:
        if row_names[name] in results["rows"]:
            print(f"{name}: done earlier, skipped")
            continue
        row = ROWS[name]
        started = time.perf_counter()
        scheme = row.get("scheme")
        if scheme == "born-again":
            seeds = iter(range(1, 100))
            student, histories = born_again(
                lambda seeds=seeds: fresh(student_arch, next(seeds)), teacher, data, config, generations=2
            )
            info = summarize(histories[-1])
            info["generations"] = [summarize(h) for h in histories]
            info["scheme"] = "born-again: generation 2 learns from generation 1 (Furlanello et al. 2018)"
        elif scheme == "teacher-assistant":
            assistant, student = fresh(assistant_arch), fresh(student_arch)
            histories = teacher_assistant_chain([teacher, assistant, student], data, config)
            info = summarize(histories[-1])
            info["scheme"] = f"{TEACHER_ARCH} -> {assistant_arch} -> {student_arch} (Mirzadeh et al. 2020)"
            info["assistant"] = {
                "arch": assistant_arch,
                "macs": macs[assistant_arch],
                "params": params[assistant_arch],
                **evaluate(assistant),
                **summarize(histories[0]),
            }
        elif scheme == "mutual":
            student, peer = fresh(student_arch), fresh(TEACHER_ARCH, seed=1)
            info = summarize(mutual_learning(student, peer, data, config))
            info["scheme"] = f"online (Zhang et al. 2018): {student_arch} with a fresh {TEACHER_ARCH}"
            info["peer"] = evaluate(peer)
        elif scheme == "quantization":
            info = quantization_row(data, teacher, config, evaluate, student_arch, args.augmented_teacher)
            student = None
        elif scheme == "epoch-cost":
            info = epoch_cost(data, teacher, config, fresh, student_arch)
            student = None
        elif row.get("keep"):
            student, info = kd_student(data, teacher, config, student_arch, args.augmented_teacher)
        else:
            student, info = distil(student_arch, row["loss"], teacher, data, config, row.get("cached", False))
        if student is not None:
            info.update(evaluate(student))
        info["loss"] = row.get("loss")
        info["wall_seconds"] = round(time.perf_counter() - started, 1)
        results["rows"][row_names[name]] = info
        write_json_atomic(out, results)
        print(f"{name}: {json.dumps({k: v for k, v in info.items() if k != 'history'})}")
    print_table(results)
    return 0


def quantization_row(data, teacher, config, evaluate, arch: str, augmented_teacher: bool = False) -> dict:
    """int8 TFLite of the kd student: post-training quantization alone, and quantization-aware
    distillation from the fp32 teacher, both measured in the LiteRT interpreter on the test split."""
    import tempfile

    import torch

    from edgekd.artifact import make_contract
    from edgekd.data import stack
    from edgekd.distill.stage import DistillPlan, quantization_aware
    from edgekd.distill.trainer import accuracy
    from edgekd.export import export
    from edgekd.runtimes import open_session, to_layout
    from edgekd.runtimes import predict as run_artifact

    student, _ = kd_student(data, teacher, config, arch, augmented_teacher)
    fp32 = evaluate(student)
    images, labels = stack(data.test)
    calibration = stack(data.train, limit=256)[0]
    contract = make_contract(arch, "tflite", data.preprocessing)
    int8 = dataclasses.replace(contract, precision="int8")

    def artifact_accuracy(artifact) -> float:
        logits = run_artifact(open_session(artifact), to_layout(images.numpy(), "NHWC"))
        return accuracy(torch.from_numpy(logits), labels)

    with tempfile.TemporaryDirectory() as scratch:
        ptq = export(student, "tflite", Path(scratch) / "ptq", contract=int8, calibration=calibration)
        ptq_accuracy = artifact_accuracy(ptq)
        started = time.perf_counter()
        # fit's own step: PT2E fake-quantization, then KD from the fp32 teacher at lr / 10
        qat = quantization_aware(
            student, teacher, data, config, DistillPlan(qat_epochs=QAT_EPOCHS), arch=arch
        ).model
        qat_seconds = time.perf_counter() - started
        qat_artifact = export(qat, "tflite", Path(scratch) / "qat", contract=int8)
        qat_accuracy = artifact_accuracy(qat_artifact)
    return {
        "fp32_test_accuracy": fp32["test_accuracy"],
        "ptq_int8_test_accuracy": ptq_accuracy,
        "qat_int8_test_accuracy": qat_accuracy,
        "qat_epochs": QAT_EPOCHS,
        "qat_seconds": round(qat_seconds, 1),
    }


def epoch_cost(data, teacher, config, fresh, arch: str) -> dict:
    """Seconds per training epoch without a teacher, with the live teacher and with the teacher-output
    cache, interleaved (scratch, live, cached, scratch, ...) so that load from elsewhere on the machine
    falls on all three alike; the median of the repeats, and the ratios to scratch."""
    import statistics

    from edgekd.distill.cache import TeacherOutputCache
    from edgekd.distill.losses import parse_loss_specs
    from edgekd.distill.trainer import train

    cache = TeacherOutputCache.open(
        cache_root(), teacher, data.fingerprint, config.augmentation, len(data.train), data.num_classes
    )
    cache.fill(teacher, data.train, config.augmentation)
    modes = {"scratch": (["ce"], None), "kd-live": (["kd"], None), "kd-cached": (["kd"], cache)}
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    one_epoch = dataclasses.replace(config, epochs=1)
    for _ in range(EPOCH_COST_REPEATS):
        for mode, (loss, teacher_cache) in modes.items():
            history = train(
                fresh(arch),
                data,
                one_epoch,
                loss=parse_loss_specs(loss),
                teacher=teacher,
                teacher_cache=teacher_cache,
                description=f"epoch cost {mode}",
            )
            seconds[mode].append(history[0].seconds)
    median = {mode: statistics.median(values) for mode, values in seconds.items()}
    return {
        "seconds": seconds,
        "median_seconds": median,
        "kd_live_over_scratch": median["kd-live"] / median["scratch"],
        "kd_cached_over_scratch": median["kd-cached"] / median["scratch"],
    }


def print_table(results: dict) -> None:
    teacher = results["teacher"]
    print(
        f"\nteacher {teacher['arch']}: {100 * teacher['test_accuracy']:.2f} % test; student "
        f"{results['student']['arch']} at {results['student']['mac_ratio']:.3f} of its MACs"
    )
    print(f"{'row':20s} {'test acc %':>10s} {'agree %':>8s} {'epoch s':>8s}")
    for name, row in results["rows"].items():
        if "test_accuracy" not in row:
            continue
        print(
            f"{name:20s} {100 * row['test_accuracy']:10.2f} {100 * row['teacher_agreement']:8.2f} "
            f"{row['epoch_seconds']:8.1f}"
        )
    cost = results["rows"].get("epoch-cost")
    if cost:
        m = cost["median_seconds"]
        print(
            f"epoch cost (median of {EPOCH_COST_REPEATS}, interleaved): scratch {m['scratch']:.1f} s, "
            f"kd live {m['kd-live']:.1f} s ({cost['kd_live_over_scratch']:.2f}x), kd cached "
            f"{m['kd-cached']:.1f} s ({cost['kd_cached_over_scratch']:.2f}x)"
        )
    q = results["rows"].get("int8")
    if q:
        print(
            f"int8: fp32 {100 * q['fp32_test_accuracy']:.2f} %, "
            f"PTQ {100 * q['ptq_int8_test_accuracy']:.2f} %, QAT {100 * q['qat_int8_test_accuracy']:.2f} %"
        )


if __name__ == "__main__":
    sys.exit(main())
