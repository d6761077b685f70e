"""This host as a device: every artifact timed here goes through `edgekd.bench`, the script an SSH
device runs, in-process. `edgekd profile --device local`, the latency `ship` reports and the
benchmarks all call `bench_here`, so a file is compiled with the same runtime settings and timed
under the same protocol whichever of them asks.

Protocol (`edgekd.bench`): build the interpreter once (its load + first inference is the cold start,
reported apart), warm up, then invoke until both a minimum count and a minimum time are reached;
report median, p90, p99 and IQR.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.artifact import Artifact
from edgekd.bench import cpu_info, summarize, timed_runs
from edgekd.devices import LatencyStats, ProfileSettings
from edgekd.progress import Observer, SilentObserver

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekd.devices import Measurement

MAX_RUNS = 10_000  # a cap on the timed runs, however short one is


def host_description() -> str:
    model = cpu_info().get("model name") or platform.processor() or platform.machine()
    return f"{model} ({os.cpu_count()} logical CPUs, {platform.system()} {platform.release()})"


def bench_here(artifact: Path, settings: ProfileSettings, observer: Observer | None = None) -> dict:
    """`edgekd.bench`'s result for the artifact at `artifact` timed on this host under `settings`
    (all but the timeout: nothing here is waited on); `observer` sees the timed runs. The errors are
    edgekd's: a missing runtime is a `DependencyError`, a file its runtime refuses an `ExportError`,
    Core ML off macOS a `RuntimeUnavailableError`."""
    from edgekd.bench import MissingRuntime, UnreadableArtifact, bench
    from edgekd.devices import FORMAT_NAMES, artifact_format
    from edgekd.errors import DependencyError, ExportError, RuntimeUnavailableError
    from edgekd.runtimes import CoreMLSession, available_here

    fmt = artifact_format(artifact)
    if fmt == "coreml" and not available_here(CoreMLSession):
        raise RuntimeUnavailableError(
            f"{artifact}: Core ML models run only on macOS (this is {platform.system()}); profile it "
            "on a Mac: --device ssh://user@mac."
        )
    observer = observer or SilentObserver()
    task = observer.task(f"timing {Path(artifact).name}", total=settings.runs)
    try:
        return bench(
            str(artifact),
            threads=settings.threads,
            warmup=settings.warmup,
            min_runs=settings.runs,
            min_seconds=settings.min_seconds,
            max_runs=MAX_RUNS,
            compute_units=settings.compute_units,
            tick=lambda: task.advance(1),
        )
    except MissingRuntime as e:
        raise DependencyError(f"{e}: pip install {e.packages[0]}") from e
    except UnreadableArtifact as e:
        raise ExportError(
            f"{artifact} ({FORMAT_NAMES[fmt]}): {e.runtime} cannot load or run it ({e.detail}); export "
            "it again (edgekd export), or copy it again if it came from elsewhere."
        ) from e
    finally:
        task.close()


def measure_latency(
    artifact: Artifact,
    *,
    threads: int = 1,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 1.0,
    observer: Observer | None = None,
) -> LatencyStats:
    """Batch-1 latency of `artifact` on this host, exactly as `edgekd profile --device local` times it."""
    settings = ProfileSettings(threads=threads, runs=min_runs, warmup=warmup, min_seconds=min_seconds)
    return latency_from_bench(bench_here(artifact.path, settings, observer), host_description())


def measure_torch_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    threads: int = 1,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 1.0,
) -> LatencyStats:
    """Batch-1 latency of `model` in PyTorch eager mode under `inference_mode` (NCHW `input_shape`), the
    baseline exported artifacts are compared with, under the protocol `edgekd.bench` times them with;
    `threads` intra-op threads for the duration only."""
    import torch

    previous = torch.get_num_threads()
    try:
        started = time.perf_counter_ns()
        torch.set_num_threads(threads)
        model = model.eval()
        sample = torch.from_numpy(np.random.default_rng(0).standard_normal(input_shape).astype(np.float32))

        def invoke() -> None:
            with torch.inference_mode():
                model(sample)

        invoke()
        cold_ns = time.perf_counter_ns() - started
        samples = timed_runs(
            invoke, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, max_runs=MAX_RUNS
        )
    finally:
        torch.set_num_threads(previous)
    return LatencyStats(
        **summarize(samples),
        runs=len(samples),
        cold_start_ms=cold_ns / 1e6,
        threads=threads,
        runtime="pytorch",
        runtime_version=torch.__version__,
        device=host_description(),
        settings={"mode": "eager"},
    )


@dataclass(frozen=True)
class TFLiteMemory:
    live_peak_bytes: int  # the most activation bytes live at once, from the file's real op order
    arena_span_bytes: int  # the addresses TFLite's planner spread those activations over


def measure_tflite_memory(path: str) -> TFLiteMemory:
    """Activation memory of a .tflite as TFLite lays it out (built-in kernels, no delegate, so no
    tensor hides inside a delegate's buffers). After `allocate_tensors` every op output and the graph
    input has an address in the arena. A tensor lives from the op that writes it to the last op that
    reads it (the graph input and outputs: the whole run); an op whose output sits at the address of
    one of its own inputs runs in place and extends that input's buffer. Weights live in the model
    buffer, outside the arena; kernel scratch (im2col) is not counted."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    end = len(ops)

    def place(index: int) -> tuple[int, int]:
        view = interpreter.tensor(index)()
        return view.__array_interface__["data"][0], view.nbytes

    buffer_of: dict[int, int] = {}  # tensor index -> the tensor index owning its buffer
    lifetime: dict[int, list[int]] = {}  # owner -> [first step, last step]
    for d in interpreter.get_input_details():
        buffer_of[d["index"]] = d["index"]
        lifetime[d["index"]] = [0, end]
    for step, op in enumerate(ops):
        inputs = [i for i in op["inputs"] if i in buffer_of]
        for index in inputs:
            owner = buffer_of[index]
            lifetime[owner][1] = max(lifetime[owner][1], step)
        for index in op["outputs"]:
            shared = next((i for i in inputs if place(i) == place(index)), None)
            if shared is not None:
                buffer_of[index] = buffer_of[shared]
            else:
                buffer_of[index] = index
                lifetime[index] = [step, step]
    for d in interpreter.get_output_details():
        if d["index"] in buffer_of:
            lifetime[buffer_of[d["index"]]][1] = end
    events: dict[int, int] = {}
    for owner, (first, last) in lifetime.items():
        nbytes = place(owner)[1]
        events[first] = events.get(first, 0) + nbytes
        events[last + 1] = events.get(last + 1, 0) - nbytes
    live = peak = 0
    for step in sorted(events):
        live += events[step]
        peak = max(peak, live)
    addresses = [place(i) for i in buffer_of]
    span = max(a + n for a, n in addresses) - min(a for a, _ in addresses)
    return TFLiteMemory(live_peak_bytes=peak, arena_span_bytes=span)


class LocalDevice:
    """This host, timed by the same script an SSH device runs (`edgekd.bench`), in-process."""

    uri = "local"

    def check(self) -> dict:
        from edgekd.bench import fingerprint

        return fingerprint()

    def profile(self, artifact: Path, settings: ProfileSettings | None = None) -> Measurement:
        """`settings` (`ProfileSettings`): all but the timeout apply; nothing here is waited on."""
        from edgekd.bench import fingerprint
        from edgekd.devices import Measurement

        result = bench_here(artifact, settings or ProfileSettings())
        return Measurement(
            "local",
            Path(artifact).name,
            latency_from_bench(result, host_description()),
            fingerprint(),
            result["throttled"],
            layers=tuple(result["layers"]),
        )


def latency_from_bench(result: dict, device: str) -> LatencyStats:
    """The `LatencyStats` of one `edgekd.bench` result (here or from a device's JSON)."""
    return LatencyStats(
        **{
            k: result[k]
            for k in ("median_ms", "p90_ms", "p99_ms", "iqr_ms", "mean_ms", "runs", "cold_start_ms")
        },
        threads=result["threads"],
        runtime=result["runtime"],
        runtime_version=result["runtime_version"],
        device=device,
        statistic=result["statistic"],
        settings=result["settings"],
    )
