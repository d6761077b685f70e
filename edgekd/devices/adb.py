"""Profiling a .tflite on an Android phone over ADB with TensorFlow Lite's own `benchmark_model`.

The model is pushed to a fresh directory under /data/local/tmp, `benchmark_model` (which the user
pushes once; its path on the phone is configurable) runs it with the requested threads and
XNNPACK / GPU-delegate flags, and its log is parsed: the average and standard deviation of the
timed runs (and the median, where the tool's version prints it), init time, first inference and
memory footprint. The directory is removed afterwards, also on failure or Ctrl-C.

Example:
    >>> parse_benchmark_model("count=50 first=1 curr=1 min=1 max=2 avg=1500 std=20\\n"
    ...     "Inference timings in us: Init: 900, First inference: 2000, Warmup (avg): 1600, "
    ...     "Inference (avg): 1500").avg_ms
    1.5
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgekd.devices import (
    LatencyStats,
    Measurement,
    ProfileSettings,
    artifact_format,
    refuse_option_like,
    refuse_unsafe_characters,
)
from edgekd.errors import ConfigError, DeviceError

REMOTE_ROOT = "/data/local/tmp"
_NUMBER = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
    rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}"
)
_RUNS = re.compile(
    rf"count=(\d+) first={_NUMBER} curr={_NUMBER} min={_NUMBER} max={_NUMBER} avg={_NUMBER} std={_NUMBER}(.*)"
)
_MEDIAN = re.compile(rf"median={_NUMBER}")
_P95 = re.compile(rf"p95={_NUMBER}")
_MEMORY = (
    re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER}"),
    re.compile(rf"Peak memory footprint \(MB\): init={_NUMBER} overall={_NUMBER}"),
    re.compile(
        rf"Memory footprint delta from the start of the tool \(MB\): init={_NUMBER} overall={_NUMBER}"
    ),
)


@dataclass(frozen=True)
class BenchmarkModelResult:
    runs: int
    avg_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    median_ms: float | None  # newer benchmark_model versions print median and p95
    p95_ms: float | None
    init_ms: float
    first_inference_ms: float
    warmup_avg_ms: float
    memory_mb: float | None  # peak footprint (or overall delta on older versions)
    layers: tuple[dict, ...] = ()  # with --enable_op_profiling: per-op average ms, slowest first


def parse_benchmark_model(text: str) -> BenchmarkModelResult:
    """The figures of one `benchmark_model` log. Its timed runs are the last `count=` line with
    statistics (the first is the warm-up's); all of its numbers are microseconds."""
    summary = _SUMMARY.search(text)
    runs = [m for m in (_RUNS.search(line) for line in text.splitlines()) if m]
    if summary is None or not runs:
        tail = " | ".join(text.strip().splitlines()[-3:]) or "no output"
        raise DeviceError(f"benchmark_model printed no timing summary; its last lines: {tail}")
    timed = runs[-1]
    count, _, _, low, high, avg, std, rest = timed.groups()
    median, p95 = _MEDIAN.search(rest), _P95.search(rest)
    memory = None
    for pattern in _MEMORY:
        found = pattern.search(text)
        if found:
            memory = float(found.groups()[-1])
            break
    init, first, warmup, _ = (float(x) for x in summary.groups())
    layers = _op_profile(text)
    return BenchmarkModelResult(
        runs=int(count),
        avg_ms=float(avg) / 1e3,
        std_ms=float(std) / 1e3,
        min_ms=float(low) / 1e3,
        max_ms=float(high) / 1e3,
        median_ms=float(median.group(1)) / 1e3 if median else None,
        p95_ms=float(p95.group(1)) / 1e3 if p95 else None,
        init_ms=init / 1e3,
        first_inference_ms=first / 1e3,
        warmup_avg_ms=warmup / 1e3,
        memory_mb=memory,
        layers=layers,
    )


def _op_profile(text: str) -> tuple[dict, ...]:
    """The 'Run Order' table of the regular runs' operator-wise profile (tab-separated: node type,
    start, first, avg ms, %, cdf%, mem KB, times called, name), slowest first."""
    marker = text.find("Operator-wise Profiling Info for Regular Benchmark Runs")
    if marker < 0:
        return ()
    rows = []
    in_run_order = False
    for line in text[marker:].splitlines():
        if "Run Order" in line:
            in_run_order = True
            continue
        if in_run_order and line.startswith("="):
            break
        cells = [c.strip() for c in line.split("\t") if c.strip()]
        if in_run_order and len(cells) >= 9 and cells[0] != "[node type]":
            rows.append({"layer": cells[8], "type": cells[0], "ms": float(cells[3])})
    return tuple(sorted(rows, key=lambda r: -r["ms"]))


@dataclass(frozen=True)
class ADBDevice:
    serial: str
    benchmark_model: str = f"{REMOTE_ROOT}/benchmark_model"  # where the user pushed the tool
    adb: str = "adb"
    xnnpack: bool = True  # benchmark_model's XNNPACK delegate
    gpu: bool = False  # its GPU delegate

    def __post_init__(self) -> None:
        refuse_option_like(self.uri, "serial", self.serial)

    @classmethod
    def from_uri(cls, uri: str, **options) -> ADBDevice:
        refuse_unsafe_characters(uri)
        try:
            parts = urlsplit(uri)
        except ValueError as e:
            raise ConfigError(
                f"{uri!r}: not a valid URI ({e}); write adb://SERIAL (see `adb devices`)."
            ) from e
        serial = parts.netloc or parts.path.lstrip("/")
        if parts.scheme != "adb" or not serial:
            raise ConfigError(f"{uri!r} is not an ADB device; write adb://SERIAL (see `adb devices`).")
        return cls(serial, **options)

    @property
    def uri(self) -> str:
        return f"adb://{self.serial}"

    def benchmark_command(
        self,
        remote_model: str,
        *,
        threads: int,
        runs: int,
        warmup: int,
        min_seconds: float,
        xnnpack: bool = True,
        gpu: bool = False,
        op_profiling: bool = True,
    ) -> list[str]:
        """The adb command line that runs benchmark_model on the phone."""
        flags = [
            f"--graph={remote_model}",
            f"--num_threads={threads}",
            f"--num_runs={runs}",
            f"--warmup_runs={warmup}",
            f"--min_secs={min_seconds:g}",
            f"--use_xnnpack={str(xnnpack).lower()}",
            f"--use_gpu={str(gpu).lower()}",
            "--report_peak_memory_footprint=true",
            f"--enable_op_profiling={str(op_profiling).lower()}",
        ]
        shell = " ".join(shlex.quote(part) for part in [self.benchmark_model, *flags])
        return [self.adb, "-s", self.serial, "shell", shell]

    def _adb(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(
                [self.adb, "-s", self.serial, *args], capture_output=True, text=True, timeout=timeout_s
            )
        except FileNotFoundError as e:
            raise DeviceError(
                f"adb is not installed here ({self.adb}); install Android platform-tools."
            ) from e
        except subprocess.TimeoutExpired as e:
            raise DeviceError(f"{self.uri}: adb {args[0]} got no answer within {timeout_s:g} s.") from e
        if done.returncode != 0 and ("not found" in done.stderr or "offline" in done.stderr):
            raise DeviceError(f"{self.uri}: {done.stderr.strip()} (see `adb devices`).")
        return done

    def profile(self, artifact: Path, settings: ProfileSettings | None = None) -> Measurement:
        """`settings`: threads, runs, warm-up and minimum seconds go to benchmark_model, which has no
        compute units (Core ML's): any but the default is refused rather than silently dropped."""
        settings = settings or ProfileSettings()
        artifact = Path(artifact)
        if artifact_format(artifact) != "tflite":
            raise ConfigError(
                f"{artifact}: ADB profiling runs benchmark_model, which takes .tflite files only."
            )
        if settings.compute_units != ProfileSettings.compute_units:
            raise ConfigError(
                f"{self.uri}: --compute-units {settings.compute_units} is Core ML's (a Mac); benchmark_model "
                "on a phone has none. Leave it out."
            )
        remote_dir = f"{REMOTE_ROOT}/edgekd-bench.{uuid.uuid4().hex[:12]}"
        remote_model = f"{remote_dir}/{artifact.name}"
        try:
            self._adb("shell", f"mkdir -p {shlex.quote(remote_dir)}", timeout_s=60)
            # absolute, so that a file named like "-x.tflite" is not read as an option of adb push
            pushed = self._adb("push", os.path.abspath(artifact), remote_model, timeout_s=settings.timeout_s)
            if pushed.returncode != 0:
                raise DeviceError(f"{self.uri}: adb push failed: {pushed.stderr.strip()}")
            command = self.benchmark_command(
                remote_model,
                threads=settings.threads,
                runs=settings.runs,
                warmup=settings.warmup,
                min_seconds=settings.min_seconds,
                xnnpack=self.xnnpack,
                gpu=self.gpu,
            )
            done = self._adb(*command[3:], timeout_s=settings.timeout_s)
            if "not found" in done.stdout + done.stderr and "benchmark_model" in done.stdout + done.stderr:
                raise DeviceError(
                    f"{self.uri}: {self.benchmark_model} is not on the phone; push TensorFlow Lite's "
                    "benchmark_model there (adb push benchmark_model /data/local/tmp) or name its path."
                )
            result = parse_benchmark_model(done.stdout + "\n" + done.stderr)
        finally:
            self._adb("shell", f"rm -rf {shlex.quote(remote_dir)}", timeout_s=60)
        fingerprint = self._fingerprint()
        nan = float("nan")  # benchmark_model reports no p90, p99 or quartiles, and older ones no median
        latency = LatencyStats(
            median_ms=result.median_ms if result.median_ms is not None else nan,
            p90_ms=nan,
            p99_ms=nan,
            iqr_ms=nan,
            mean_ms=result.avg_ms,
            runs=result.runs,
            cold_start_ms=result.init_ms + result.first_inference_ms,
            threads=settings.threads,
            runtime="tflite benchmark_model"
            + (" (gpu)" if self.gpu else " (xnnpack)" if self.xnnpack else ""),
            runtime_version="",
            device=f"{fingerprint.get('model', 'android')} ({self.uri})",
            statistic="median" if result.median_ms is not None else "mean",
        )
        return Measurement(
            self.uri,
            artifact.name,
            latency,
            fingerprint,
            None,
            memory_mb=result.memory_mb,
            layers=result.layers,
            extra={
                "std_ms": result.std_ms,
                "min_ms": result.min_ms,
                "max_ms": result.max_ms,
                "p95_ms": result.p95_ms,
                "init_ms": result.init_ms,
            },
        )

    def check(self) -> dict:
        """Reachability (`adb get-state`), the phone's model and Android version, and whether
        benchmark_model is where the profile will look for it."""
        state = self._adb("get-state", timeout_s=30)
        if state.returncode != 0 or state.stdout.strip() != "device":
            raise DeviceError(
                f"{self.uri}: not ready ({(state.stderr or state.stdout).strip()}); see `adb devices`."
            )
        found = self._adb("shell", f"ls {shlex.quote(self.benchmark_model)}", timeout_s=30)
        present = found.returncode == 0 and "No such file" not in found.stdout + found.stderr
        return {**self._fingerprint(), "benchmark_model": self.benchmark_model if present else None}

    def _fingerprint(self) -> dict:
        props = {"model": "ro.product.model", "soc": "ro.soc.model", "android": "ro.build.version.release"}
        found = {}
        for key, prop in props.items():
            done = self._adb("shell", f"getprop {prop}", timeout_s=30)
            if done.returncode == 0 and done.stdout.strip():
                found[key] = done.stdout.strip()
        return found
