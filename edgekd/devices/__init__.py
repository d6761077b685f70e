"""Measured latency on real hardware: this host (`local`), any board or Mac over SSH (`ssh`), an
Android phone over ADB (`adb`), all one `Device`: `check()`, and `profile(artifact, settings)` reporting
one `Measurement`; `registry` keeps named devices.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgekd.bench import COMPUTE_UNITS, SUFFIXES
from edgekd.errors import ConfigError


@dataclass(frozen=True)
class LatencyStats:
    """Latency statistics of one artifact under the timing protocol, on any device. `statistic` names
    the central figure: "median", or "mean" where the device's tool reports no median
    (benchmark_model), and then `median_ms` is NaN, like any other figure a tool does not report."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    iqr_ms: float
    mean_ms: float
    runs: int
    cold_start_ms: float
    threads: int
    runtime: str
    runtime_version: str
    device: str
    statistic: str = "median"
    # The runtime options that change what is measured, as the runtime resolved them (OpenVINO's
    # inference precision, ONNX Runtime's graph optimisation); empty where the runtime has none.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def central_ms(self) -> float:
        """The figure `statistic` names."""
        return getattr(self, CENTRAL_FIELDS[self.statistic])


# The field that holds each statistic a latency can be summarised by.
CENTRAL_FIELDS = {"median": "median_ms", "mean": "mean_ms"}


def runtime_description(latency: LatencyStats | dict[str, Any]) -> str:
    """The runtime and the settings it was timed with, from a `LatencyStats` or its JSON (where older
    runs have no settings): "openvino 2026.1 (inference precision bf16, streams 1), 1 thread"."""
    if isinstance(latency, LatencyStats):
        latency = asdict(latency)
    settings = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (latency.get("settings") or {}).items())
    version = f" {latency['runtime_version']}" if latency["runtime_version"] else ""
    threads = f"{latency['threads']} thread{'' if latency['threads'] == 1 else 's'}"
    return f"{latency['runtime']}{version}{f' ({settings})' if settings else ''}, {threads}"


def central_figure(latency: dict[str, Any]) -> tuple[str, float]:
    """The statistic a `LatencyStats`' JSON holds and its figure (a run written before latencies named
    their statistic holds the median)."""
    statistic = latency.get("statistic", "median")
    return statistic, latency[CENTRAL_FIELDS[statistic]]


@dataclass(frozen=True)
class Measurement:
    """One artifact timed on one device under the shared protocol (`edgekd.bench`)."""

    device: str  # the URI it was measured on
    artifact: str  # the file name
    latency: LatencyStats
    fingerprint: dict[str, Any]  # CPU, cores, governor, temperature, OS, runtime versions
    throttled: bool | None  # None: neither clock nor temperature readable there
    layers: tuple[dict[str, Any], ...] = field(default_factory=tuple)  # per-layer ms, slowest first
    memory_mb: float | None = None  # peak memory the device's tool reports, where it does
    extra: dict[str, Any] = field(default_factory=dict)  # figures only one tool reports (std, min, max)

    @property
    def statistic(self) -> str:
        """Which statistic the central figure is: the latency's own."""
        return self.latency.statistic


@dataclass(frozen=True)
class ProfileSettings:
    """How an artifact is timed, on any device; each device uses what applies to it (compute units are
    Core ML's, and a device whose tool has none refuses any but the default). Checked when made, so a
    bad value fails before a device is contacted."""

    threads: int = 1
    runs: int = 50  # the minimum of timed runs
    warmup: int = 10  # untimed runs first
    min_seconds: float = 1.0  # the minimum of timed seconds
    compute_units: str = "ALL"  # Core ML on a Mac
    timeout_s: float = 600  # before a remote bench is stopped

    def __post_init__(self) -> None:
        for name, least in (("threads", 1), ("runs", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"--{name} {value!r}: must be a whole number of at least {least}.")
        if not (math.isfinite(self.min_seconds) and self.min_seconds >= 0):
            raise ConfigError(f"--min-seconds {self.min_seconds:g}: must be 0 or more seconds.")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(f"--timeout {self.timeout_s:g}: must be more than 0 seconds.")
        if self.compute_units not in COMPUTE_UNITS:
            raise ConfigError(
                f"--compute-units {self.compute_units!r}: valid are {', '.join(COMPUTE_UNITS)} (Core ML)."
            )


class Device(Protocol):
    """What `edgekd profile` and `fit --device` need of a device (local, SSH, ADB)."""

    @property
    def uri(self) -> str: ...

    def check(self) -> dict:
        """Reachability and what the device has: its fingerprint (CPU or model, OS, runtimes)."""

    def profile(self, artifact: Path, settings: ProfileSettings | None = None) -> Measurement:
        """`artifact` timed on the device under the shared protocol (`settings`: the defaults if None)."""


FORMAT_NAMES = {"tflite": "TFLite", "openvino": "OpenVINO IR", "onnx": "ONNX", "coreml": "Core ML"}


def artifact_format(artifact: Path) -> str:
    """The format of the artifact at `artifact` (tflite, openvino, onnx, coreml), refusing, before any
    device is contacted, a path that is missing, of an unknown kind, or without its companion files."""
    from edgekd.artifact import companion_files

    artifact = Path(artifact)
    fmt = SUFFIXES.get(artifact.suffix)
    if fmt is None:
        raise ConfigError(
            f"{artifact}: not an artifact edgekd can time (suffix {artifact.suffix or 'none'!r}); "
            f"known: {', '.join(SUFFIXES)}."
        )
    if not artifact.exists():
        raise ConfigError(f"{artifact}: no such artifact.")
    if fmt == "coreml" and not artifact.is_dir():
        raise ConfigError(f"{artifact}: a Core ML package is a directory, and this is a file.")
    if fmt != "coreml" and not artifact.is_file():
        raise ConfigError(f"{artifact}: a {FORMAT_NAMES[fmt]} model is a file, and this is a directory.")
    for companion in companion_files(artifact):
        if not companion.exists():
            raise ConfigError(
                f"{artifact}: {companion.name} is missing; the {FORMAT_NAMES[fmt]} format keeps part of the "
                "model there, beside it. Copy it there, or export again."
            )
    return fmt


_UNSAFE_CHARACTERS = re.compile(r"[\s\x00-\x1f\x7f]")


def redacted(uri: str) -> str:
    """`uri` with any password replaced by ***, for messages."""
    return re.sub(r"(://[^/@:]*):[^/]*@", r"\1:***@", uri)  # greedy: a password may hold an @


def refuse_unsafe_characters(uri: str) -> None:
    """Whitespace and control characters are refused in a whole device URI, before urlsplit, which
    drops tabs and newlines without a word."""
    if _UNSAFE_CHARACTERS.search(uri):
        raise ConfigError(
            f"{redacted(uri)!r}: a device URI has no spaces or control characters; write "
            "ssh://[user@]host[:port] or adb://SERIAL, or give the device a name in ~/.ssh/config."
        )


def refuse_option_like(uri: str, what: str, value: str) -> None:
    """A host, user or serial that ssh or adb could read as an option (or that names nothing)."""
    if not value:
        raise ConfigError(
            f"{redacted(uri)!r}: the {what} is empty; write ssh://[user@]host[:port] or adb://SERIAL."
        )
    if value.startswith("-"):
        raise ConfigError(
            f"{redacted(uri)!r}: the {what} {value!r} begins with '-', which ssh and adb would read as an "
            f"option; no real {what} does."
        )
    if _UNSAFE_CHARACTERS.search(value):
        raise ConfigError(f"{redacted(uri)!r}: the {what} {value!r} holds spaces or control characters.")
