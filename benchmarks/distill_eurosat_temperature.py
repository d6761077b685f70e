"""The KD temperature and weight on EuroSAT, chosen on the validation split: benchmarks/distill_eurosat.py's
kd-cached row (same data, recipe, seed and student) at other (T, alpha), for the plain teacher of the
table and for the teacher trained on augmented views. Test accuracy is reported beside validation
accuracy, but only validation accuracy may pick a setting.

    python benchmarks/distill_eurosat_temperature.py     # writes results/distill_eurosat_temperature.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import distill_eurosat as eurosat_benchmark  # the sibling benchmark: data, teachers, recipe

OUT = Path(__file__).resolve().parent / "results" / "distill_eurosat_temperature.json"
SETTINGS = [(4.0, 0.9), (2.0, 0.9), (1.0, 0.9), (2.0, 0.5)]


def main() -> int:
    import torch

    from edgekd._io import write_json_atomic
    from edgekd.catalog import build_model
    from edgekd.distill.cache import TeacherOutputCache
    from edgekd.distill.losses import parse_loss_specs
    from edgekd.distill.trainer import accuracy, predict, train

    torch.set_num_threads(2)
    data = eurosat_benchmark.eurosat(eurosat_benchmark.TRAIN_IMAGES)
    config = eurosat_benchmark.student_recipe()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for teacher_name, augmented in (("plain", False), ("augmented", True)):
        teacher = eurosat_benchmark.cached_teacher(data, augmented)
        rows = results.setdefault(teacher_name, {})
        cache = TeacherOutputCache.open(
            eurosat_benchmark.cache_root(),
            teacher,
            data.fingerprint,
            config.augmentation,
            len(data.train),
            data.num_classes,
        )
        if not cache.complete:
            cache.fill(teacher, data.train, config.augmentation)
        for temperature, alpha in SETTINGS:
            key = f"T{temperature}-a{alpha}"
            if key in rows:
                continue
            torch.manual_seed(0)
            student = build_model(eurosat_benchmark.STUDENT_ARCH, data.num_classes)
            loss = parse_loss_specs(["kd"], temperature=temperature, alpha=alpha)
            train(student, data, config, loss=loss, teacher=teacher, teacher_cache=cache, description=key)
            rows[key] = {
                "val": accuracy(*predict(student, data.val)),
                "test": accuracy(*predict(student, data.test)),
            }
            write_json_atomic(OUT, results)
            print(teacher_name, key, rows[key], flush=True)
    for teacher_name, rows in results.items():
        best = max(rows, key=lambda k: rows[k]["val"])
        print(f"{teacher_name}: best on validation {best} ({rows[best]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
