"""Closing the loop: a measurement becomes a row of `profiles/<target>.csv` with its provenance, and
the latency predictor refits to it (`edgekd.latency_validation.calibration_report`).
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


def device_mismatch(spec: str, target: str) -> str | None:
    """Why a measurement on the device `spec` (local, a URI or a registered name) is not a row of
    `target`'s profile, or None when it is. `local` is this machine, the `host` target. Any other
    device is the target it was registered for (`edgekd devices add NAME URI --target T`): what a
    device reports of its CPU cannot be matched with a target's `compute.cpu` (a Raspberry Pi 5
    reports its board, not Cortex-A76; a phone its SoC's name)."""
    from edgekd.devices.registry import load_devices

    devices = {} if spec == "local" else load_devices()
    entry = devices.get(spec)
    uri = entry.uri if entry else spec
    if uri == "local":
        return None if target == "host" else f"local is this machine (the host target), not a {target}"
    if entry is None:
        registered = [e for e in devices.values() if e.uri == uri]
        if any(e.target == target for e in registered):
            return None
        return f"{uri} is not registered as a {target} (edgekd devices add NAME {uri} --target {target})"
    if entry.target != target:
        registered_as = f"registered as {entry.target}" if entry.target else "registered for no target"
        return (
            f"device {spec} is {registered_as} (edgekd devices add {spec} {uri} --target {target} --replace)"
        )
    return None


def artifact_contract(artifact: Path):
    """The contract in the artifact's sidecar (edgekd wrote it), which a row needs: so a row is never
    guessed from a file name."""
    from edgekd.artifact import load_artifact

    try:
        return load_artifact(artifact).contract
    except Exception as e:
        raise ConfigError(
            f"{artifact}: --record needs the artifact's sidecar ({artifact.name}.json, written by edgekd "
            f"export) to know its model, input size and precision ({e})."
        ) from e


def profile_row(measurement: Measurement, artifact: Path, forced: str | None = None) -> ProfileRow:
    """The row for `measurement` of `artifact`; `forced`: why the device is not the target's hardware,
    when --force recorded it anyway (its source column says so)."""
    contract = artifact_contract(artifact)
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
        latency_ms_median=lat.central_ms,
        latency_ms_p90=None if math.isnan(lat.p90_ms) else lat.p90_ms,  # NaN: the tool reports none
        source=f"measured: edgekd profile on {measurement.device}"
        + (f" (forced with --force: {forced})" if forced else ""),
        measured_at=datetime.date.today().isoformat(),
        statistic=measurement.statistic,
        device=f"{where}, {fingerprint.get('os', '')}".strip(", "),
        notes=f"{lat.runs} runs; throttled={measurement.throttled}; governor={fingerprint.get('governor')}",
    )


def record_measurement(
    measurement: Measurement,
    artifact: Path,
    target: str,
    directory: Path | None = None,
    forced: str | None = None,
) -> Path:
    """Append the measurement to `<directory>/<target>.csv` (default: the user's profile directory,
    which the predictor reads after the shipped profiles/)."""
    path = (directory or user_profiles_dir()) / f"{target}.csv"
    return append_row(path, profile_row(measurement, artifact, forced))
