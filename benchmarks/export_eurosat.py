"""Every export format and precision of a distilled EuroSAT student, each run in its real runtime on the
whole EuroSAT test split (4,050 real images) next to PyTorch, and timed on this host at batch 1.

The student is benchmarks/distill_eurosat.py's kd-cached row (mobilenetv3_small_100 distilled from
the resnet18 teacher at 64 px; both cached, so this script trains nothing when that benchmark ran).
Accuracy and top-1 agreement are measured on the test split; int8 is calibrated on 256 training
images. Latency: `edgekd.devices.local`'s protocol (session built once, 10 warm-up runs, then at
least 50 runs and 1 s), 1 thread, every row in the same run, quoted as a ratio to PyTorch eager.

    python benchmarks/export_eurosat.py          # writes benchmarks/results/export_eurosat.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import distill_eurosat as eurosat_benchmark  # the sibling benchmark: data, teacher, student

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_IMAGES = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export_eurosat.json")
    args = parser.parse_args(argv)

    import torch

    from edgekd._io import write_json_atomic
    from edgekd.artifact import FORMATS
    from edgekd.export.suite import export_inputs, export_matrix, requested_pairs, rows_as_dicts

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(os.cpu_count() or 1)  # training, if the student is not cached yet
    data = eurosat_benchmark.eurosat(eurosat_benchmark.TRAIN_IMAGES)
    teacher = eurosat_benchmark.cached_teacher(data)
    student, _ = eurosat_benchmark.kd_student(data, teacher, eurosat_benchmark.student_recipe())
    inputs = export_inputs(data, None, CALIBRATION_IMAGES, split="test")
    rows = export_matrix(
        student,
        eurosat_benchmark.STUDENT_ARCH,
        inputs,
        out_dir=eurosat_benchmark.cache_root() / "exports",
        pairs=requested_pairs(FORMATS.names(), None),
        threads=args.threads,
    )
    fp32 = {r.format: r.accuracy for r in rows if r.precision == "fp32"}
    results = {
        "student": eurosat_benchmark.STUDENT_ARCH,
        "input_size": data.input_size,
        "test_images": len(inputs.targets),
        "calibration_images": CALIBRATION_IMAGES,
        "threads": args.threads,
        "rows": rows_as_dicts(rows),
        "int8_minus_fp32_points": {
            r.format: 100 * (r.accuracy - fp32[r.format])
            for r in rows
            if r.precision == "int8" and r.accuracy is not None and fp32.get(r.format) is not None
        },
    }
    write_json_atomic(args.out, results)
    print_table(rows)
    print(f"int8 minus fp32 accuracy (points): {json.dumps(results['int8_minus_fp32_points'])}")
    print(f"wrote {args.out}")
    return 0


def print_table(rows) -> None:
    print(
        f"\n{'format':9s} {'precision':9s} {'status':42s} {'MB':>6s} {'acc %':>6s} {'agree %':>7s} "
        f"{'ms':>7s} {'x eager':>7s}"
    )

    def number(value, fmt):
        return "-" if value is None else format(value, fmt)

    for r in rows:
        print(
            f"{r.format:9s} {r.precision:9s} {r.status:42s} {number(r.size_mb, '6.2f')} "
            f"{number(None if r.accuracy is None else 100 * r.accuracy, '6.2f')} "
            f"{number(None if r.top1_agreement is None else 100 * r.top1_agreement, '7.2f')} "
            f"{number(r.latency_ms, '7.3f')} {number(r.latency_ratio, '7.2f')}"
        )


if __name__ == "__main__":
    sys.exit(main())
