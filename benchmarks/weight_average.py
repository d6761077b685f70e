"""The cost of one update of the weight average the trainer ships on small data: torch's
`AveragedModel.update_parameters` (what the trainer called before) against edgekd's `WeightAverage`
(pairs listed once, one fused lerp), beside the training step it follows, per catalog student.

Both updates run in one process on the same network after real SGD steps, alternated round after
round so that load on a shared machine hits both alike; each figure is the median over rounds of the
median update. The step is the plain forward, backward and fused SGD step in the layout the trainer
uses (`catalog.training_layout`).

    python benchmarks/weight_average.py    # writes benchmarks/results/weight_average.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"
STUDENTS = ("lcnet_035", "mobilenetv3_small_050", "mobilenetv2_050", "ghostnet_100", "resnet10t")
DECAY = 0.99


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(arch: str, batch: int, size: int, rounds: int, repeats: int) -> dict:
    from edgekd.catalog import build_model, training_layout
    from edgekd.distill.weight_average import WeightAverage, warmed_up_decay

    torch.manual_seed(0)
    model = build_model(arch, 10)
    layout = training_layout(model)
    model.to(memory_format=layout).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, fused=True)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def warmed(averaged, current, updates) -> None:  # the trainer's former multi_avg_fn
        decay = warmed_up_decay(DECAY, int(updates))
        torch.optim.swa_utils.get_ema_multi_avg_fn(decay)(averaged, current, updates)

    before = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=warmed, use_buffers=True)
    now = WeightAverage(model, DECAY, warmup=True)
    for _ in range(3):  # oneDNN picks its kernels on the first steps
        step()
    steps, old, new = [], [], []
    for _ in range(rounds):
        steps.append(_timed(step, 3))
        old.append(_timed(lambda: before.update_parameters(model), repeats))
        new.append(_timed(now.update, repeats))
    for name, value in now.module.state_dict().items():  # same average after the same updates
        if value.is_floating_point():
            torch.testing.assert_close(value, before.module.state_dict()[name], rtol=1e-4, atol=1e-5)
    step_s, old_s, new_s = statistics.median(steps), statistics.median(old), statistics.median(new)
    return {
        "arch": arch,
        "batch": batch,
        "input_size": size,
        "layout": str(layout).removeprefix("torch."),
        "tensors": sum(1 for _ in model.parameters()) + sum(1 for _ in model.buffers()),
        "step_ms": 1e3 * step_s,
        "averaged_model_update_ms": 1e3 * old_s,
        "weight_average_update_ms": 1e3 * new_s,
        "speedup": old_s / new_s,
        "step_with_average_speedup": (step_s + old_s) / (step_s + new_s),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    rows = [measure(a, args.batch, args.input_size, args.rounds, args.repeats) for a in STUDENTS]
    header = ("tensors", "step ms", "AveragedModel ms", "WeightAverage ms", "x", "step+avg x")
    print(f"{'student':24} " + " ".join(f"{h:>{max(len(h), 6)}}" for h in header))
    for r in rows:
        print(
            f"{r['arch']:24} {r['tensors']:7d} {r['step_ms']:7.1f} {r['averaged_model_update_ms']:16.2f} "
            f"{r['weight_average_update_ms']:16.2f} {r['speedup']:6.1f} "
            f"{r['step_with_average_speedup']:10.2f}"
        )
    out = RESULTS / "weight_average.json"
    record = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
