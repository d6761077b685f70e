"""Peak activation memory: edgekd.analysis's estimate against the arena TFLite actually plans.

For each model (artifacts converted by benchmarks/profile_host.py), the measured figure is the span of
addresses TFLite's memory planner assigned to the graph input and every op output after
allocate_tensors (edgekd.devices.local.measure_tflite_arena_bytes). The estimate is the peak of live
tensor bytes over the deployed graph (BatchNorm folded, ReLU fused, explicit PADs, in-place ADD/MUL)
from tensor lifetimes. Beside them: the estimate's own arena layout (TFLite's greedy-by-size planner
replayed on those lifetimes) and the span TFLite's planner actually used, which also holds kernel
scratch buffers (im2col) that the estimate does not model.

    python benchmarks/peak_memory.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = [
    "resnet18", "resnet10t", "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_050",
    "efficientnet_lite0", "lcnet_100", "regnetx_002", "ghostnet_100", "mnasnet_100", "densenet121",
    "convnext_atto", "efficientvit_m0", "mobilevit_xxs", "fastvit_t8",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--sizes", nargs="*", type=int, default=[128, 224])
    args = parser.parse_args(argv)

    from edgekd._io import write_json_atomic
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model
    from edgekd.devices.local import measure_tflite_memory
    from edgekd.paths import default_cache_dir

    rows = []
    print(
        f"{'model':28s} {'size':>4s} {'estimate MB':>11s} {'tflite MB':>9s} {'ratio':>6s} "
        f"{'planned MB':>10s} {'tflite span MB':>14s}"
    )
    for arch in args.models:
        for size in args.sizes:
            path = default_cache_dir() / "profile-host" / f"{arch}-{size}" / "model-fp32.tflite"
            if not path.exists():
                print(f"{arch}@{size}: no artifact (run benchmarks/profile_host.py convert)", file=sys.stderr)
                continue
            cost = analyze(build_model(arch, 1000), size)
            memory = measure_tflite_memory(str(path))
            measured = memory.live_peak_bytes
            ratio = cost.peak_activation_bytes / measured
            rows.append(
                {
                    "model": arch,
                    "input_size": size,
                    "estimate_bytes": cost.peak_activation_bytes,
                    "tflite_live_peak_bytes": measured,
                    "estimate_arena_bytes": cost.arena_bytes,
                    "tflite_arena_span_bytes": memory.arena_span_bytes,
                    "estimate_unfused_bytes": cost.peak_activation_bytes_unfused,
                    "ratio": round(ratio, 4),
                }
            )
            print(
                f"{arch:28s} {size:4d} {cost.peak_activation_bytes / 2**20:11.3f} {measured / 2**20:9.3f} "
                f"{ratio:6.3f} {cost.arena_bytes / 2**20:10.3f} {memory.arena_span_bytes / 2**20:14.3f}"
            )
    within = sum(abs(r["ratio"] - 1) <= 0.15 for r in rows)
    summary = {"rows": rows, "within_15_percent": within, "count": len(rows)}
    print(f"within ±15%: {within} of {len(rows)}")
    write_json_atomic(ROOT / "benchmarks" / "results" / "peak_memory.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
