"""The one timing protocol (STYLE.md item 9), here on this host. Benchmarks reuse it.

Build the session once (its load + first inference is the cold start, reported apart), warm up, then
invoke until both a minimum count and a minimum time are reached; report median, p90, p99 and IQR.

Example:
    >>> # stats = measure_latency(artifact, threads=2)
    >>> # stats.median_ms
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from edgekd.export import Artifact
from edgekd.progress import Observer, SilentObserver
from edgekd.runtimes import open_session


@dataclass(frozen=True)
class LatencyStats:
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


def host_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} logical CPUs, {platform.system()} {platform.release()})"


def summarize(samples_ns: np.ndarray) -> dict[str, float]:
    ms = samples_ns / 1e6
    q25, q50, q75, q90, q99 = np.percentile(ms, [25, 50, 75, 90, 99])
    return {"median_ms": q50, "p90_ms": q90, "p99_ms": q99, "iqr_ms": q75 - q25, "mean_ms": float(ms.mean())}


def measure_latency(
    artifact: Artifact,
    *,
    threads: int = 1,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 1.0,
    max_runs: int = 10_000,
    observer: Observer | None = None,
) -> LatencyStats:
    observer = observer or SilentObserver()
    rng = np.random.default_rng(0)
    sample = rng.standard_normal(artifact.contract.input_shape).astype(np.float32)
    started = time.perf_counter_ns()
    session = open_session(artifact, threads)
    session.set_input(sample)
    session.invoke()
    cold_ns = time.perf_counter_ns() - started
    for _ in range(warmup):
        session.invoke()
    task = observer.task(f"timing {artifact.path.name}", total=min_runs)
    samples = []
    deadline = time.perf_counter_ns() + int(min_seconds * 1e9)
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter_ns() < deadline):
        t0 = time.perf_counter_ns()
        session.invoke()
        samples.append(time.perf_counter_ns() - t0)
        task.advance(1)
    task.close()
    return LatencyStats(
        **summarize(np.array(samples, dtype=np.float64)),
        runs=len(samples),
        cold_start_ms=cold_ns / 1e6,
        threads=threads,
        runtime=session.runtime,
        runtime_version=session.version,
        device=host_description(),
    )
