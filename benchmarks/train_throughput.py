"""Images per second of one knowledge-distillation step — the teacher's forward pass and the student's
forward and backward pass and optimiser step — in edgekd's trainer and in a plain hand-written PyTorch
KD loop, over the same tensors, model pair, batch size and thread count.

edgekd's arm is `edgekd.distill.trainer.train` itself, as `fit` runs it (live teacher, Hinton KD at
T = 4, α = 0.9, SGD-Nesterov, one-cycle, the layout `catalog.training_layout` picks), timed from its
own progress reports, so the batch gathering, the device copies, the DistillStep module and the
scaler are all inside the time and the validation pass after the epoch is not. The plain arm is the
loop a user writes: NCHW tensors, `teacher(x)` under no_grad, `(1 − α)·CE + α·T²·KL`, backward, step.
The two arms alternate within one process, round after round, so that load on a shared machine hits
both alike; each figure is the median over rounds of the median step.

    python benchmarks/train_throughput.py                       # CPU, 1 and 2 threads
    python benchmarks/train_throughput.py --accelerator cuda    # a GPU: edgekd mixed precision vs plain fp32

Writes benchmarks/results/train_throughput.json (or train_throughput-<accelerator>.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"
TEACHER, STUDENT = "resnet18", "mobilenetv3_small_050"
TEMPERATURE, ALPHA = 4.0, 0.9
WARMUP = 3  # steps: oneDNN (or cuDNN) picks and caches its kernels on the first ones


class StepClock:
    """An edgekd Observer that timestamps the trainer's progress reports of its training epoch."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []  # (time, steps reported)

    def stage(self, name: str, detail: str = "") -> None:
        pass

    def task(self, description: str, total: int | None):
        clock = self
        clock.marks = [(time.perf_counter(), 0)]

        class Task:
            def advance(self, steps: int = 1, **fields) -> None:
                clock.marks.append((time.perf_counter(), steps))

            def close(self) -> None:
                pass

        return Task()

    def seconds_per_step(self) -> list[float]:
        """Per report, its seconds divided by its steps, after the first WARMUP steps."""
        times, done = [], 0
        for (before, _), (after, steps) in zip(self.marks, self.marks[1:]):
            if done >= WARMUP:
                times.append((after - before) / steps)
            done += steps
        return times


def _models(num_classes: int, device: torch.device):
    from edgekd.catalog import build_model

    torch.manual_seed(0)
    teacher = build_model(TEACHER, num_classes).eval().to(device)
    student = build_model(STUDENT, num_classes)
    return teacher, student


def edgekd_rate(data, batch: int, accelerator: str) -> float:
    from edgekd.distill.losses import parse_loss_specs
    from edgekd.distill.trainer import TrainConfig, train

    teacher, student = _models(data.num_classes, torch.device("cpu"))
    config = TrainConfig(
        epochs=1, batch_size=batch, lr=0.05, weight_decay=5e-4, optimizer="sgd", accelerator=accelerator
    )
    clock = StepClock()
    loss = parse_loss_specs(("kd",), temperature=TEMPERATURE, alpha=ALPHA)
    train(student, data, config, loss=loss, teacher=teacher, observer=clock)
    return batch / statistics.median(clock.seconds_per_step())


def plain_rate(images: torch.Tensor, labels: torch.Tensor, batch: int, device: torch.device) -> float:
    teacher, student = _models(int(labels.max()) + 1, device)
    student.to(device).train()
    steps = len(images) // batch
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.05, total_steps=steps, pct_start=0.15)
    # On a GPU the clock waits for the queue every few steps, as edgekd's loss reports do.
    every = 1 if device.type == "cpu" else 25
    times, since = [], time.perf_counter()
    for i, (x, y) in enumerate(zip(images.split(batch), labels.split(batch), strict=False)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.no_grad():
            soft = F.log_softmax(teacher(x) / TEMPERATURE, 1)
        logits = student(x)
        kl = F.kl_div(F.log_softmax(logits / TEMPERATURE, 1), soft, reduction="batchmean", log_target=True)
        loss = (1 - ALPHA) * F.cross_entropy(logits, y) + ALPHA * TEMPERATURE**2 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (i + 1) % every == 0:
            float(loss.detach())  # waits for the device
            now = time.perf_counter()
            if i + 1 > WARMUP:
                times.append((now - since) / every)
            since = now
    return batch / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accelerator", default="cpu", help="edgekd's; the plain loop runs there in fp32")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per arm and round (CPU)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--note", default="", help="what to record about the machine (shared, idle)")
    args = parser.parse_args()

    from torch.utils.data import TensorDataset

    from edgekd.data import load_digits_splits
    from edgekd.distill.accelerator import resolve_accelerator

    device = resolve_accelerator(args.accelerator).device
    steps = args.steps if device.type == "cpu" else max(args.steps, 100)
    digits = load_digits_splits(args.input_size)
    images, labels = digits.train.tensors
    count = (steps + WARMUP) * args.batch
    images = images.repeat(-(-count // len(images)), 1, 1, 1)[:count]
    labels = labels.repeat(-(-count // len(labels)))[:count]
    # Validation (after the timed epoch) on one batch: it is outside the time, kept short.
    data = dataclasses.replace(
        digits, train=TensorDataset(images, labels), val=TensorDataset(images[:64], labels[:64])
    )
    rates: dict[int, dict[str, list[float]]] = {t: {"edgekd": [], "plain": []} for t in args.threads}
    for round_ in range(args.rounds):
        for threads in args.threads:
            torch.set_num_threads(threads)
            # Alternated, and the order swapped every round, so neither arm always runs second.
            arms = ["edgekd", "plain"] if round_ % 2 == 0 else ["plain", "edgekd"]
            for arm in arms:
                rate = (
                    edgekd_rate(data, args.batch, args.accelerator)
                    if arm == "edgekd"
                    else plain_rate(images, labels, args.batch, device)
                )
                rates[threads][arm].append(rate)
                print(f"round {round_ + 1}, {threads} thread(s), {arm}: {rate:.1f} img/s", flush=True)
    rows = []
    for threads, arms in rates.items():
        edgekd, plain = statistics.median(arms["edgekd"]), statistics.median(arms["plain"])
        rows.append(
            {
                "threads": threads,
                "edgekd_img_s": round(edgekd, 1),
                "plain_img_s": round(plain, 1),
                "edgekd_over_plain": round(edgekd / plain, 3),
                "edgekd_rounds": [round(r, 1) for r in arms["edgekd"]],
                "plain_rounds": [round(r, 1) for r in arms["plain"]],
            }
        )
    print(f"\n{TEACHER} -> {STUDENT}, {args.input_size} px, batch {args.batch}, on {device}")
    print(f"{'threads':>7s} {'edgekd img/s':>13s} {'plain img/s':>12s} {'ratio':>7s}")
    for row in rows:
        print(
            f"{row['threads']:7d} {row['edgekd_img_s']:13.1f} {row['plain_img_s']:12.1f} "
            f"{row['edgekd_over_plain']:6.3f}x"
        )
    result = {
        "teacher": TEACHER,
        "student": STUDENT,
        "input_size": args.input_size,
        "batch": args.batch,
        "timed_steps": steps,
        "rounds": args.rounds,
        "device": str(device),
        "edgekd_precision": resolve_accelerator(args.accelerator).describe(),
        "plain_precision": "float32",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "note": args.note,
        "rows": rows,
    }
    name = "train_throughput.json" if device.type == "cpu" else f"train_throughput-{device.type}.json"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
