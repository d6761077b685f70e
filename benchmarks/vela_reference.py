"""Vela's estimate against the one published Ethos-U55 figure for an ImageNet model.

Arm's ML Embedded Evaluation Kit runs MobileNetV2 1.0 at 224 px, int8, compiled by Vela for an
Ethos-U55 with 128 MACs/cycle (its default `ETHOS_U_NPU_CONFIG_ID=H128`), on the Corstone-300 FVP and
reports 7,346,172 NPU cycles (github.com/alifsemi/alif_ml-embedded-evaluation-kit,
docs/use_cases/img_class.md, a fork of Arm's ml-embedded-evaluation-kit on gitlab.arm.com).
This script exports timm's mobilenetv2_100 the way edgekd ships int8 models, compiles it with Vela for
ethos-u55-128 and ethos-u55-256, and prints the estimated cycles beside the published count. The FVP's
cycle count is itself approximate, and the kit's model came from TensorFlow, not from this exporter.

    python benchmarks/vela_reference.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_CYCLES = 7_346_172


def main() -> int:
    import torch

    from edgekd._io import write_json_atomic
    from edgekd.artifact import Contract
    from edgekd.catalog import build_model, randomize_norm_layers
    from edgekd.export import export
    from edgekd.vela import compile_for_ethos_u

    model = randomize_norm_layers(build_model("mobilenetv2_100", 1000)).eval()
    images = torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    contract = Contract(
        "mobilenetv2_100", "input", (1, 224, 224, 3), "NHWC", (0.0,) * 3, (1.0,) * 3, (), "int8"
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        artifact = export(
            model, "tflite", Path(scratch), contract=contract, calibration=images, min_calibration=64
        )
        for accelerator in ("ethos-u55-128", "ethos-u55-256"):
            report = compile_for_ethos_u(artifact.path, Path(scratch) / accelerator, accelerator=accelerator)
            rows.append(
                {
                    "accelerator": accelerator,
                    "cycles": report.cycles,
                    "inference_ms": report.inference_ms,
                    "npu_op_share": report.npu_op_share,
                    "sram_kib": report.sram_bytes / 1024,
                    "flash_kib": report.flash_bytes / 1024,
                }
            )
            ratio = f"{report.cycles / PUBLISHED_CYCLES:.3f}" if report.cycles else "n/a"
            print(
                f"{accelerator}: {report.cycles:,} cycles ({report.inference_ms:.2f} ms at the system "
                f"config's clock), NPU ops {100 * report.npu_op_share:.0f} %, SRAM "
                f"{report.sram_bytes / 1024:.0f} KiB, flash {report.flash_bytes / 1024:.0f} KiB; "
                f"published (U55-128, FVP) {PUBLISHED_CYCLES:,}: ratio {ratio}"
            )
    write_json_atomic(
        ROOT / "benchmarks" / "results" / "vela_reference.json",
        {"published_cycles": PUBLISHED_CYCLES, "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
