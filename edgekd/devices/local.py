"""The one timing protocol (the same as `edgekd.bench` runs on a device), here on this host
through edgekd's runtime sessions. Benchmarks reuse it, so every figure is measured the same way.

Build the session once (its load + first inference is the cold start, reported apart), warm up, then
invoke until both a minimum count and a minimum time are reached; report median, p90, p99 and IQR.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.artifact import Artifact
from edgekd.bench import cpu_info, summarize, timed_runs
from edgekd.devices import LatencyStats
from edgekd.progress import Observer, SilentObserver
from edgekd.runtimes import Session, open_session

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekd.devices import Measurement, ProfileSettings


def host_description() -> str:
    model = cpu_info().get("model name") or platform.processor() or platform.machine()
    return f"{model} ({os.cpu_count()} logical CPUs, {platform.system()} {platform.release()})"


def measure_latency(artifact: Artifact, *, threads: int = 1, **protocol: Any) -> LatencyStats:
    """Batch-1 latency of `artifact` in its runtime on this host; `protocol`: `time_session`'s
    warmup, min_runs, min_seconds, max_runs and observer."""
    sample = _sample(artifact.contract.input_shape)
    started = time.perf_counter_ns()
    session = open_session(artifact, threads)
    session.set_input(sample)
    session.invoke()
    cold_ns = time.perf_counter_ns() - started
    return time_session(session, cold_ns, artifact.path.name, **protocol)


def measure_torch_latency(
    model: nn.Module, input_shape: tuple[int, ...], *, threads: int = 1, **protocol: Any
) -> LatencyStats:
    """Batch-1 latency of `model` in PyTorch eager mode (NCHW `input_shape`), the baseline that
    exported artifacts are compared with; `threads` intra-op threads for the duration only."""
    import torch

    previous = torch.get_num_threads()
    try:
        started = time.perf_counter_ns()
        session = TorchEagerSession(model, threads)
        session.set_input(_sample(input_shape))
        session.invoke()
        cold_ns = time.perf_counter_ns() - started
        return time_session(session, cold_ns, "pytorch eager", **protocol)
    finally:
        torch.set_num_threads(previous)


def time_session(
    session: Session,
    cold_ns: int,
    name: str,
    *,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 1.0,
    max_runs: int = 10_000,
    observer: Observer | None = None,
) -> LatencyStats:
    """The protocol on a session that is built and has its input set: warm up, then invoke until
    both `min_runs` and `min_seconds` are reached (at most `max_runs`)."""
    observer = observer or SilentObserver()
    task = observer.task(f"timing {name}", total=min_runs)
    samples = timed_runs(
        session.invoke,
        warmup=warmup,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_runs=max_runs,
        tick=lambda: task.advance(1),
    )
    task.close()
    return LatencyStats(
        **summarize(samples),
        runs=len(samples),
        cold_start_ms=cold_ns / 1e6,
        threads=session.threads,
        runtime=session.runtime,
        runtime_version=session.version,
        device=host_description(),
    )


class TorchEagerSession:
    """A PyTorch model behind the runtime `Session` interface, in eval mode under `inference_mode`."""

    runtime = "pytorch"

    def __init__(self, model: nn.Module, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.threads, self.version = threads, torch.__version__
        self._model = model.eval()
        self._input = None
        self._output = None

    def set_input(self, sample: np.ndarray) -> None:
        import torch

        self._input = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))

    def invoke(self) -> None:
        import torch

        with torch.inference_mode():
            self._output = self._model(self._input)

    def output(self) -> np.ndarray:
        return self._output.numpy().copy()


def _sample(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


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
        from edgekd.bench import MissingRuntime, UnreadableArtifact, bench, fingerprint
        from edgekd.devices import FORMAT_NAMES, Measurement, ProfileSettings, artifact_format
        from edgekd.errors import DependencyError, ExportError, RuntimeUnavailableError
        from edgekd.runtimes import CoreMLSession, available_here

        settings = settings or ProfileSettings()
        fmt = artifact_format(artifact)
        if fmt == "coreml" and not available_here(CoreMLSession):
            raise RuntimeUnavailableError(
                f"{artifact}: Core ML models run only on macOS (this is {platform.system()}); profile it "
                "on a Mac: --device ssh://user@mac."
            )
        try:
            result = bench(
                str(artifact),
                threads=settings.threads,
                warmup=settings.warmup,
                min_runs=settings.runs,
                min_seconds=settings.min_seconds,
                max_runs=10_000,
                compute_units=settings.compute_units,
            )
        except MissingRuntime as e:
            raise DependencyError(f"{e}: pip install {e.packages[0]}") from e
        except UnreadableArtifact as e:
            raise ExportError(
                f"{artifact} ({FORMAT_NAMES[fmt]}): {e.runtime} cannot load or run it ({e.detail}); export "
                "it again (edgekd export), or copy it again if it came from elsewhere."
            ) from e
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
    )
