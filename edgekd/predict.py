"""Predict a timm architecture's latency on any target: Vela's estimate of the int8 file edgekd would
ship for an Ethos-U target (`edgekd.vela`), the calibrated per-op cost model (`edgekd.latency`)
otherwise. The one place that knows both, so that the cost model needs neither the exporter nor Vela.

Example:
    >>> from edgekd.predict import predict_model
    >>> from edgekd.targets import get_target
    >>> predict_model("mobilenetv3_small_050", get_target("pi5"), input_size=32).latency_ms > 0
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.analysis import COST_CLASSES
from edgekd.errors import EdgeKDError
from edgekd.latency import Coefficients, calibrate, model_time_s, op_times_s, prior_coefficients
from edgekd.op_tables import OpTable
from edgekd.targets import Target
from edgekd.vela import NpuEstimate, estimate_on_npu


@dataclass(frozen=True)
class Prediction:
    model: str
    input_size: int
    latency_ms: float
    per_class_ms: dict[str, float]
    coefficients: Coefficients
    macs: int
    params: int
    peak_memory_bytes: int
    npu: NpuEstimate | None = None  # an Ethos-U target: Vela's figures instead of the roofline


def predict_model(
    arch: str,
    target: Target,
    *,
    input_size: int | None = None,
    precision: str | None = None,
    threads: int | None = None,
    num_classes: int = 1000,
) -> Prediction:
    """Predict a timm architecture's latency on `target`, with the per-class breakdown."""
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model

    input_size = input_size or target.input_size
    precision = precision or target.default_precision
    if precision not in target.precisions:
        raise EdgeKDError(
            f"target {target.name} does not run {precision}; "
            f"its precisions are {', '.join(target.precisions)}."
        )
    model = build_model(arch, num_classes)
    cost = analyze(model, input_size)
    if target.latency_model.estimator == "vela":
        npu = estimate_on_npu(model, target, input_size)
        return Prediction(
            model=arch,
            input_size=input_size,
            latency_ms=npu.latency_ms,
            per_class_ms={},
            coefficients=prior_coefficients(target, precision, target.threads, npu.provenance),
            macs=cost.macs,
            params=cost.params,
            peak_memory_bytes=npu.sram_bytes + npu.flash_bytes,
            npu=npu,
        )
    coefficients = calibrate(target, precision, threads)
    table = OpTable.from_cost(cost)
    theta = coefficients.vector()
    times = op_times_s(table, target, precision, coefficients.threads, theta)
    per_class = {c: float(times[table.classes == i].sum() * 1e3) for i, c in enumerate(COST_CLASSES)}
    per_class["invoke"] = coefficients.invoke_overhead_us * 1e-3
    return Prediction(
        model=arch,
        input_size=input_size,
        latency_ms=model_time_s(table, target, precision, coefficients.threads, theta) * 1e3,
        per_class_ms={c: v for c, v in per_class.items() if v > 0},
        coefficients=coefficients,
        macs=cost.macs,
        params=cost.params,
        peak_memory_bytes=cost.peak_memory_bytes(precision),
    )
