"""Measure this host's LiteRT latency over many timm models at two resolutions; seed profiles/host.csv.

Every model is built untrained, its BatchNorms re-initialised so nothing folds away (timm zero-inits
the last BatchNorm of residual blocks), exported through edgekd's own TFLite path (NHWC I/O, fp32,
batch 1) and timed with edgekd's one timing protocol (devices/local.py). A conversion whose file holds
far fewer weight bytes than the model's folded parameters is reported and not timed.

Two phases, both resumable: `convert` caches artifacts under the edgekd cache dir; `measure` times
every cached artifact that has no row in profiles/host.csv yet. Run `measure` on a quiet machine.

    python benchmarks/profile_host.py convert
    python benchmarks/profile_host.py measure --threads 1
    python benchmarks/profile_host.py recheck     # time 12 of them again: the noise floor
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Edge-sized timm families with different op mixes: depthwise-separable, squeeze-excite, hard-swish,
# plain 3x3 residual, grouped (RegNet), ghost, concat-heavy (DenseNet, DLA), attention (LeViT, FastViT).
MODELS = [
    "mobilenetv3_small_050",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
    "mobilenetv3_large_075",
    "mobilenetv3_large_100",
    "tf_mobilenetv3_small_minimal_100",
    "tf_mobilenetv3_large_minimal_100",
    "mobilenetv2_035",
    "mobilenetv2_050",
    "mobilenetv2_075",
    "mobilenetv2_100",
    "mobilenetv2_140",
    "mobilenetv1_100",
    "mobilenetv4_conv_small",
    "mobilenetv4_conv_medium",
    "lcnet_050",
    "lcnet_075",
    "lcnet_100",
    "lcnet_150",
    "efficientnet_lite0",
    "efficientnet_b0",
    "efficientnet_es",
    "tinynet_a",
    "tinynet_e",
    "ghostnet_100",
    "mnasnet_100",
    "semnasnet_100",
    "mnasnet_small",
    "fbnetc_100",
    "spnasnet_100",
    "hardcorenas_a",
    "mixnet_s",
    "regnetx_002",
    "regnetx_004",
    "regnety_002",
    "regnety_004",
    "resnet10t",
    "resnet14t",
    "resnet18",
    "resnet18d",
    "resnet26",
    "resnet34",
    "resnet50",
    "repvgg_a0",
    "mobileone_s0",
    "dla46_c",
    "densenet121",
    "rexnet_100",
    "ese_vovnet19b_dw",
    "convnext_atto",
    "levit_128s",
    "fastvit_t8",
    "efficientvit_m0",
    "edgenext_xx_small",
    "mobilevit_xxs",
]
RESOLUTIONS = (128, 224)
MIN_WEIGHT_RATIO = 0.9  # file bytes / (4 x folded params): below this the converter dropped weights


def artifact_dir(cache: Path, arch: str, size: int) -> Path:
    return cache / "profile-host" / f"{arch}-{size}"


def convert(models: list[str], sizes: tuple[int, ...], cache: Path, results: dict):
    import torch

    from edgekd.artifact import FORMATS, Contract
    from edgekd.catalog import build_model, folded_weight_count, randomize_norm_layers
    from edgekd.errors import EdgeKDError
    from edgekd.export import export

    spec = FORMATS.get("tflite")
    for arch in models:
        for size in sizes:
            key = f"{arch}@{size}"
            out = artifact_dir(cache, arch, size)
            path = out / f"model-fp32{spec.suffix}"
            if path.exists() and key in results:
                continue
            started = time.perf_counter()
            model = None
            try:
                model = randomize_norm_layers(build_model(arch, 1000)).eval()
                contract = Contract(arch, "input", (1, size, size, 3), "NHWC", (0.0,) * 3, (1.0,) * 3, ())
                with torch.no_grad():
                    artifact = export(model, "tflite", out, contract=contract, stem="model")
                expected = 4 * folded_weight_count(model)
                ratio = artifact.size_bytes / expected
                results[key] = {
                    "status": "ok" if ratio >= MIN_WEIGHT_RATIO else "degenerate",
                    "file_bytes": artifact.size_bytes,
                    "folded_params": expected // 4,
                    "weight_ratio": round(ratio, 4),
                    "convert_s": round(time.perf_counter() - started, 2),
                }
            except (EdgeKDError, RuntimeError, ValueError, TypeError, NotImplementedError) as e:
                results[key] = {"status": "convert_failed", "error": f"{type(e).__name__}: {str(e)[:300]}"}
            print(key, results[key], flush=True)
            del model
            gc.collect()
            yield


def measure(cache: Path, results: dict, threads: int, min_seconds: float):
    from edgekd.artifact import load_artifact
    from edgekd.devices.local import measure_latency
    from edgekd.profiles import ProfileRow, read_profile_file

    csv_path = ROOT / "profiles" / "host.csv"
    rows = read_profile_file(csv_path) if csv_path.exists() else []
    done = {(r.model, r.input_size, r.threads) for r in rows}
    today = dt.date.today().isoformat()
    for key, info in sorted(results.items()):
        arch, size = key.split("@")
        if info.get("status") != "ok" or (arch, int(size), threads) in done:
            continue
        artifact = load_artifact(artifact_dir(cache, arch, int(size)) / "model-fp32.tflite")
        stats = measure_latency(artifact, threads=threads, min_seconds=min_seconds, min_runs=30)
        rows.append(
            ProfileRow(
                model=arch,
                input_size=int(size),
                precision="fp32",
                runtime="litert",
                runtime_version=stats.runtime_version,
                threads=threads,
                latency_ms_median=round(stats.median_ms, 4),
                latency_ms_p90=round(stats.p90_ms, 4),
                source="measured: benchmarks/profile_host.py on this host",
                measured_at=today,
                statistic="median",
                device=stats.device,
                notes=(
                    f"{stats.runs} runs, IQR {stats.iqr_ms:.3f} ms, cold start {stats.cold_start_ms:.1f} ms"
                ),
            )
        )
        print(f"{key:40s} median {stats.median_ms:9.3f} ms  p90 {stats.p90_ms:9.3f} ms", flush=True)
        yield rows


def recheck(cache: Path, count: int, threads: int, min_seconds: float) -> dict:
    """Time `count` already-profiled artifacts again: the ratio of medians is the noise floor that
    any predictor error should be read against."""
    import numpy as np

    from edgekd.artifact import load_artifact
    from edgekd.devices.local import measure_latency
    from edgekd.profiles import read_profile_file

    rows = [r for r in read_profile_file(ROOT / "profiles" / "host.csv") if r.threads == threads]
    picked = [
        rows[i] for i in np.random.default_rng(0).choice(len(rows), size=min(count, len(rows)), replace=False)
    ]
    ratios = []
    for row in picked:
        artifact = load_artifact(artifact_dir(cache, row.model, row.input_size) / "model-fp32.tflite")
        stats = measure_latency(artifact, threads=threads, min_seconds=min_seconds, min_runs=30)
        ratios.append(float(stats.median_ms / row.latency_ms_median))
        print(
            f"{row.model}@{row.input_size:<4d} then {row.latency_ms_median:8.3f} ms  "
            f"now {stats.median_ms:8.3f} ms  ratio {ratios[-1]:.3f}"
        )
    deviation = np.abs(np.array(ratios) - 1)
    summary = {
        "artifacts": len(ratios),
        "median_abs_change_pct": round(float(np.median(deviation) * 100), 2),
        "max_abs_change_pct": round(float(deviation.max() * 100), 2),
        "ratios": [round(r, 4) for r in ratios],
    }
    print(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("phase", choices=["convert", "measure", "all", "recheck"])
    parser.add_argument("--recheck-count", type=int, default=12)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--sizes", nargs="*", type=int, default=list(RESOLUTIONS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from edgekd._io import write_json_atomic
    from edgekd.paths import default_cache_dir
    from edgekd.profiles import write_profile_file

    cache = default_cache_dir()
    results_path = ROOT / "benchmarks" / "results" / "profile_host.json"
    results = json.loads(results_path.read_text())["artifacts"] if results_path.exists() else {}

    def save() -> None:
        ok = sum(1 for v in results.values() if v.get("status") == "ok")
        write_json_atomic(results_path, {"artifacts": results, "ok": ok, "total": len(results)})

    if args.phase == "recheck":
        write_json_atomic(
            ROOT / "benchmarks" / "results" / "profile_host_recheck.json",
            recheck(cache, args.recheck_count, args.threads, args.min_seconds),
        )
        return 0
    if args.phase in ("convert", "all"):
        for _ in convert(args.models, tuple(args.sizes), cache, results):
            save()
    if args.phase in ("measure", "all"):
        header = (
            "This host's LiteRT (XNNPACK) latencies, fp32, batch 1, NHWC I/O, written by\n"
            "benchmarks/profile_host.py; untrained timm weights with BatchNorms re-initialised."
        )
        for rows in measure(cache, results, args.threads, args.min_seconds):
            write_profile_file(ROOT / "profiles" / "host.csv", rows, header)
    counts: dict[str, int] = {}
    for info in results.values():
        counts[info["status"]] = counts.get(info["status"], 0) + 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
