"""Closing the loop: a measurement becomes a row of `profiles/<target>.csv` with its provenance, and
the latency predictor refits to it (`edgekd.latency.calibration_report`).

Example:
    >>> # record_measurement(measurement, Path("exports/student-fp32.tflite"), "pi5")
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

from edgekd.devices import Measurement
from edgekd.errors import ConfigError
from edgekd.profiles import ProfileRow, append_row, user_profiles_dir

# The runtime names the bench reports, as profile rows spell them (edgekd.profiles).
PROFILE_RUNTIMES = {"litert": "litert", "openvino": "openvino", "onnxruntime": "onnxruntime"}


def profile_row(measurement: Measurement, artifact: Path) -> ProfileRow:
    """The row for `measurement` of `artifact`; its model, input size and precision come from the
    artifact's sidecar (edgekd wrote it), so a row is never guessed from a file name."""
    from edgekd.export import load_artifact

    try:
        contract = load_artifact(artifact).contract
    except Exception as e:
        raise ConfigError(
            f"{artifact}: --record needs the artifact's sidecar ({artifact.name}.json, written by edgekd "
            f"export) to know its model, input size and precision ({e})."
        ) from e
    runtime = measurement.latency.runtime
    base = runtime.split(" ")[0]
    lat = measurement.latency
    size = contract.input_shape[1] if contract.layout == "NHWC" else contract.input_shape[2]
    fingerprint = measurement.fingerprint
    where = fingerprint.get("cpu") or fingerprint.get("model") or measurement.device
    return ProfileRow(
        model=contract.arch,
        input_size=int(size),
        precision=contract.precision,
        runtime=PROFILE_RUNTIMES.get(base, base),
        runtime_version=lat.runtime_version,
        threads=lat.threads,
        latency_ms_median=lat.median_ms if measurement.statistic == "median" else lat.mean_ms,
        latency_ms_p90=None if math.isnan(lat.p90_ms) else lat.p90_ms,  # NaN: the tool reports none
        source=f"measured: edgekd profile on {measurement.device}",
        measured_at=datetime.date.today().isoformat(),
        statistic=measurement.statistic,
        device=f"{where}, {fingerprint.get('os', '')}".strip(", "),
        notes=f"{lat.runs} runs; throttled={measurement.throttled}; governor={fingerprint.get('governor')}",
    )


def record_measurement(
    measurement: Measurement, artifact: Path, target: str, directory: Path | None = None
) -> Path:
    """Append the measurement to `<directory>/<target>.csv` (default: the user's profile directory,
    which the predictor reads after the shipped profiles/)."""
    path = (directory or user_profiles_dir()) / f"{target}.csv"
    return append_row(path, profile_row(measurement, artifact))
