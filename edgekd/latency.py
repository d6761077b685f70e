"""Predicted latency of a model on a target.

This first estimate is a compute roofline: MACs at the target's peak for its precision, scaled by the
efficiency the target file cites, plus a fixed dispatch cost per layer. The targets/latency issue replaces
it with a per-layer model fitted to `profiles/`.
"""

from __future__ import annotations

from edgekd.analysis import ModelCost
from edgekd.targets import Target


def predict_latency_ms(cost: ModelCost, target: Target, precision: str | None = None) -> float:
    """Example:
    >>> # 1 GMAC on a 100 GFLOP/s device at 50 % efficiency is 40 ms before overheads.
    """
    precision = precision or target.default_precision
    flops = 2.0 * cost.macs
    achieved = target.compute.peak_gflops[precision] * 1e9 * target.latency_model.efficiency
    compute_ms = flops / achieved * 1e3
    overhead_ms = cost.dispatched_layers * target.latency_model.per_layer_overhead_us * 1e-3
    return compute_ms + overhead_ms
