"""Measured latency on real hardware: this host (`local`), any board or Mac over SSH (`ssh`), an
Android phone over ADB (`adb`), all reporting one `Measurement`; `registry` keeps named devices.

Example:
    >>> # measurement = connect("ssh://pi@raspberrypi.local").profile(Path("student-fp32.tflite"))
    >>> # measurement.latency.median_ms
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekd.devices.local import LatencyStats


@dataclass(frozen=True)
class Measurement:
    """One artifact timed on one device under the shared protocol (`edgekd.devices.bench`)."""

    device: str  # the URI it was measured on
    artifact: str  # the file name
    latency: LatencyStats
    fingerprint: dict[str, Any]  # CPU, cores, governor, temperature, OS, runtime versions
    throttled: bool | None  # None: neither clock nor temperature readable there
    statistic: str = "median"  # "mean" where the device's tool reports no median (benchmark_model)
    layers: tuple[dict[str, Any], ...] = field(default_factory=tuple)  # per-layer ms, slowest first
    memory_mb: float | None = None  # peak memory the device's tool reports, where it does
    extra: dict[str, Any] = field(default_factory=dict)  # figures only one tool reports (std, min, max)
