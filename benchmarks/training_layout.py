"""Training speed of every catalog student in the contiguous (NCHW) and channels_last (NHWC) memory
layouts on this CPU, and what the layout does to a distilled student's accuracy.

`edgekd.catalog.training_layout` trains networks with grouped (depthwise) convolutions channels_last.
This benchmark is the evidence: a training step (SGD-Nesterov on cross-entropy, random images) of each
student, the two layouts alternated within one process so that load on a shared machine hits both
alike, and the ratio of their images per second. `--accuracy ARCH` also distils ARCH on digits with
`edgekd fit`'s recipe (its cached teacher, views and TrainConfig) over three seeds in each layout, with
`--threads` torch threads: the layout must not cost accuracy, and the seeds show how far one recipe's
result spreads (on digits, far: the thread count alone, which reorders float sums as the layout does,
moved one seed of lcnet_035 from 99.26 % to 92.57 % test).

    python benchmarks/training_layout.py                     # speed, every student, 32 px, batch 16
    python benchmarks/training_layout.py --accuracy lcnet_035 lcnet_050

Writes benchmarks/results/training_layout.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "training_layout.json"
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def step_rate(arch: str, kwargs: dict, layout, input_size: int, batch: int, steps: int) -> float:
    from edgekd.catalog import build_model

    torch.manual_seed(0)
    model = build_model(arch, 10, **kwargs).to(memory_format=layout)
    x = torch.randn(batch, 3, input_size, input_size).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    times = []
    for i in range(steps + 3):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i >= 3:  # warm-up: oneDNN picks and caches its kernels on the first steps
            times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


def speed(input_size: int, batch: int, steps: int, rounds: int) -> list[dict]:
    from edgekd.catalog import build_model, load_students, training_layout

    rows = []
    for candidate in load_students():
        rates = {name: [] for name in LAYOUTS}
        for _ in range(rounds):  # alternated, so a burst of load hits both layouts
            for name, layout in LAYOUTS.items():
                rate = step_rate(candidate.arch, candidate.kwargs, layout, input_size, batch, steps)
                rates[name].append(rate)
        row = {name: statistics.median(r) for name, r in rates.items()}
        chosen = training_layout(build_model(candidate.arch, 10, **candidate.kwargs))
        row = {
            "student": candidate.name,
            "contiguous_img_s": round(row["contiguous"], 1),
            "channels_last_img_s": round(row["channels_last"], 1),
            "ratio": round(row["channels_last"] / row["contiguous"], 2),
            "edgekd_trains": "channels_last" if chosen == torch.channels_last else "contiguous",
        }
        rows.append(row)
        print(
            f"{row['student']:34s} {row['contiguous_img_s']:8.0f} {row['channels_last_img_s']:8.0f} "
            f"{row['ratio']:6.2f}x  {row['edgekd_trains']}",
            flush=True,
        )
    return rows


def accuracy(archs: list[str], seeds: tuple[int, ...]) -> list[dict]:
    """Each arch distilled on digits as `edgekd fit` would (fit's defaults, its teacher) per seed."""
    import tempfile

    import edgekd.distill.trainer as trainer
    from edgekd.catalog import build_model, load_teacher_recipe, training_layout
    from edgekd.data import decode_once, load_digits_splits
    from edgekd.distill.stage import distil_student
    from edgekd.distill.trainer import accuracy as top1
    from edgekd.distill.trainer import predict
    from edgekd.fit_config import FitConfig
    from edgekd.fit_recipe import make_distill_plan, make_train_config, view_decision, with_batch_size
    from edgekd.paths import default_cache_dir
    from edgekd.targets import get_target
    from edgekd.teachers import train_cached_teacher

    cache = default_cache_dir()
    data = decode_once(load_digits_splits(32), cache)
    teacher = train_cached_teacher(data, load_teacher_recipe(), cache).model.eval()
    config = with_batch_size(FitConfig.from_options(), len(data.train))
    views = view_decision(config, teacher, data)
    base = make_train_config(config, data.input_size, views, train_images=len(data.train))
    plan = make_distill_plan(config, [get_target("pi5")])
    rows = []
    for arch in archs:
        for name, layout in LAYOUTS.items():
            # The trainer asks catalog.training_layout; here each arm pins one layout instead.
            pinned = (lambda m, layout=layout: layout) if name == "contiguous" else training_layout
            trainer.training_layout = pinned
            for seed in seeds:

                def make(seed=seed, arch=arch):
                    torch.manual_seed(seed)
                    return build_model(arch, data.num_classes)

                started = time.perf_counter()
                with tempfile.TemporaryDirectory() as scratch:
                    out = distil_student(
                        make, teacher, data, dataclasses.replace(base, seed=seed), plan, arch=arch,
                        cache_dir=Path(scratch),
                    )  # fmt: skip
                row = {
                    "student": arch,
                    "layout": name,
                    "seed": seed,
                    "test_accuracy": round(top1(*predict(out.student, data.test)), 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    trainer.training_layout = training_layout
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accuracy", nargs="*", default=None, metavar="ARCH")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.skip_speed:
        print(f"{'student':34s} {'NCHW':>8s} {'NHWC':>8s} {'ratio':>7s}  img/s of a training step")
        result["speed"] = {
            "input_size": args.input_size, "batch": args.batch, "threads": args.threads,
            "rows": speed(args.input_size, args.batch, args.steps, args.rounds),
        }  # fmt: skip
    if args.accuracy:
        result["accuracy"] = {"dataset": "digits, 32 px", "rows": accuracy(args.accuracy, (0, 1, 2))}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
