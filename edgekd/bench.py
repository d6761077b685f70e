"""The one timing protocol, as a script that runs anywhere: on this host (imported by
`edgekd.devices.local`) and copied alone onto a device over SSH, where edgekd is not installed.
It needs only the Python standard library, numpy, and the runtime of the artifact's format. As it
imports nothing of edgekd it sits on the bottom floor, so that `edgekd.runtimes` and `edgekd.hostinfo`
may use its helpers (`one_line`, `cpu_info`) without importing `edgekd.devices`.

Protocol: build the interpreter once (its load + first inference is the cold start, reported
apart), warm up, then invoke until both a minimum count and a minimum time are reached; report
median, p90, p99 and IQR. The device's fingerprint (CPU, cores, frequency governor, temperature,
OS, runtime versions) is read before and after, and a run whose clock dropped or that got hot is
flagged as throttled.

    python3 bench.py MODEL.tflite --threads 4 --runs 50 --warmup 10 --min-seconds 1
    python3 bench.py --check          # the fingerprint and which runtimes this device has

Prints one JSON object on stdout. Exit status 3: the runtime the artifact needs is missing (the JSON
names the package to install); 2: bad arguments or an unreadable artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

MISSING_RUNTIME_EXIT = 3

# format -> [(import name, pip package)], tried in order
RUNTIMES = {
    "tflite": [
        ("ai_edge_litert", "ai-edge-litert"),
        ("tflite_runtime", "tflite-runtime"),
        ("tensorflow", "tensorflow"),
    ],
    "openvino": [("openvino", "openvino")],
    "onnx": [("onnxruntime", "onnxruntime")],
    "coreml": [("coremltools", "coremltools")],
}
SUFFIXES = {".tflite": "tflite", ".xml": "openvino", ".onnx": "onnx", ".mlpackage": "coreml"}
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_ONLY", "CPU_AND_GPU")
THROTTLE_CLOCK_DROP = 0.9  # the clock fell below 90 % of where it started
THROTTLE_TEMPERATURE_C = 80.0


def summarize(samples_ns) -> dict:
    """Median, p90, p99, IQR and mean in milliseconds of per-invocation times in nanoseconds."""
    import numpy as np

    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    q25, q50, q75, q90, q99 = np.percentile(ms, [25, 50, 75, 90, 99])
    return {
        "median_ms": float(q50),
        "p90_ms": float(q90),
        "p99_ms": float(q99),
        "iqr_ms": float(q75 - q25),
        "mean_ms": float(ms.mean()),
    }


def timed_runs(invoke, *, warmup: int, min_runs: int, min_seconds: float, max_runs: int, tick=None) -> list:
    """Warm up, then time `invoke` until both `min_runs` and `min_seconds` are reached (at most
    `max_runs`, raised to `min_runs` if below it); nanoseconds per call. `tick` is called after each
    timed run (a progress bar)."""
    max_runs = max(max_runs, min_runs)
    for _ in range(warmup):
        invoke()
    samples = []
    deadline = time.perf_counter_ns() + int(min_seconds * 1e9)
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter_ns() < deadline):
        t0 = time.perf_counter_ns()
        invoke()
        samples.append(time.perf_counter_ns() - t0)
        if tick is not None:
            tick()
    return samples


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _thousandths(path: str) -> float | None:
    """A /sys integer in thousandths (millidegrees, kHz) as units; None where it is not readable."""
    raw = _read(path)
    try:
        return int(raw) / 1000.0 if raw else None
    except ValueError:
        return None


def _temperature_c() -> float | None:
    return _thousandths("/sys/class/thermal/thermal_zone0/temp")


def _clock_mhz() -> float | None:
    return _thousandths("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")


def cpu_info() -> dict:
    """/proc/cpuinfo as {key: value}, each key's first value (the first core's); {} where there is
    none (macOS). edgekd's one reader of it: `edgekd.hostinfo` and `edgekd.devices.local` use it too."""
    info = {}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def _cpu_model() -> str:
    info = cpu_info()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if key in info:
            return info[key]
    if platform.system() == "Darwin":
        import subprocess

        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def runtime_versions() -> dict:
    """Every runtime this Python has, with its version (None: not installed), read from the
    installed packages' metadata: importing them all would take seconds and print their warnings."""
    import importlib.metadata
    import importlib.util

    found = {}
    for candidates in RUNTIMES.values():
        for module, package in candidates:
            try:
                found[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                found[package] = "unknown" if importlib.util.find_spec(module) is not None else None
    return found


def fingerprint(runtimes: bool = True) -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "clock_mhz": _clock_mhz(),
        "temperature_c": _temperature_c(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        **({"runtimes": runtime_versions()} if runtimes else {}),
    }


def throttled(before: dict, after: dict) -> bool | None:
    """Whether the run looks throttled: the clock dropped, or the SoC got hot; None when neither
    the clock nor the temperature can be read on this device."""
    signs = []
    if before.get("clock_mhz") and after.get("clock_mhz"):
        signs.append(after["clock_mhz"] < THROTTLE_CLOCK_DROP * before["clock_mhz"])
    if after.get("temperature_c") is not None:
        signs.append(after["temperature_c"] >= THROTTLE_TEMPERATURE_C)
    return any(signs) if signs else None


class MissingRuntime(Exception):
    def __init__(self, fmt: str):
        self.fmt = fmt
        self.packages = [package for _, package in RUNTIMES[fmt]]
        super().__init__(f"no runtime for {fmt} on this device; install one of: {', '.join(self.packages)}")


def _import_first(fmt: str):
    import importlib

    for module, _ in RUNTIMES[fmt]:
        try:
            return module, importlib.import_module(module)
        except Exception:
            continue
    raise MissingRuntime(fmt)


def _random_input(shape, dtype):
    import numpy as np

    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


class UnreadableArtifact(ValueError):
    """The artifact's runtime refused to load or run it: a damaged, truncated or foreign file."""

    def __init__(self, path: str, fmt: str, runtime: str, error: BaseException):
        self.path, self.fmt, self.runtime, self.detail = path, fmt, runtime, one_line(str(error))
        super().__init__(f"{path} ({fmt}): {runtime} cannot load or run it: {self.detail}")


def one_line(text: str, limit: int = 300) -> str:
    """A runtime's message on one line: OpenVINO's "Exception from src/...:N:" frames dropped,
    whitespace collapsed, cut at `limit` characters."""
    kept = [line for line in text.splitlines() if not re.match(r"\s*Exception from \S+:\d+:?\s*$", line)]
    flat = " ".join(" ".join(kept).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "..."


def artifact_kind(path: str) -> str:
    """The format a path's suffix names (tflite, openvino, onnx, coreml); ValueError for any other."""
    suffix = os.path.splitext(path.rstrip("/"))[1]
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unknown artifact type {suffix!r}; expected one of {', '.join(SUFFIXES)}")
    return SUFFIXES[suffix]


class Runtime(NamedTuple):
    """An artifact loaded for timing: `invoke` runs it on its prepared input; `settings` are the
    options it was compiled with that change what is measured, as the runtime resolved them."""

    invoke: Callable[[], Any]
    name: str
    version: str
    handle: Any  # the runtime's own object, for its per-layer counters
    settings: dict


def open_runtime(path: str, threads: int, compute_units: str = "ALL") -> Runtime:
    """The artifact at `path` in its runtime, its input set to random data of the model's own shape
    and type. Every host timing goes through here, on this machine and on a device, so a file is
    compiled the same way wherever it is timed. UnreadableArtifact: the runtime refused the file."""
    fmt = artifact_kind(path)
    if compute_units not in COMPUTE_UNITS:
        raise ValueError(f"compute units {compute_units!r}; valid: {', '.join(COMPUTE_UNITS)}")
    module, runtime = _import_first(fmt)
    try:
        return _load(fmt, module, runtime, path, threads, compute_units)
    except Exception as e:  # each runtime raises its own kinds: ValueError, RuntimeError, pybind11's
        raise UnreadableArtifact(path, fmt, module, e) from e


def _load(fmt: str, module: str, runtime, path: str, threads: int, compute_units: str) -> Runtime:
    version = getattr(runtime, "__version__", "unknown")
    if fmt == "tflite":
        if module == "ai_edge_litert":
            from ai_edge_litert.interpreter import Interpreter
        elif module == "tflite_runtime":
            from tflite_runtime.interpreter import Interpreter
        else:
            Interpreter = runtime.lite.Interpreter
        interpreter = Interpreter(model_path=path, num_threads=threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], _random_input(tuple(detail["shape"]), detail["dtype"]))
        return Runtime(interpreter.invoke, "litert", version, interpreter, {})
    if fmt == "openvino":
        core = runtime.Core()
        # No INFERENCE_PRECISION_HINT: the CPU plugin's default execution mode is PERFORMANCE, in which
        # it computes a float model in a smaller type where the CPU has one natively (bf16 with
        # AVX512_BF16 or AMX) and in f32 elsewhere. A deployed app gets that default, so it is what is
        # timed, and the precision the plugin chose is reported beside the figure. PERF_COUNT: the
        # per-layer times.
        compiled = core.compile_model(
            core.read_model(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": "YES"}
        )
        request = compiled.create_infer_request()
        port = compiled.input(0)
        request.set_input_tensor(runtime.Tensor(_random_input(tuple(port.shape), "float32")))
        return Runtime(request.infer, "openvino", version, request, _openvino_settings(compiled))
    if fmt == "onnx":
        options = runtime.SessionOptions()
        options.intra_op_num_threads = threads
        session = runtime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        feed = {
            spec.name: _random_input(tuple(d if isinstance(d, int) else 1 for d in spec.shape), "float32")
        }
        settings = {
            "graph_optimization": options.graph_optimization_level.name,
            "execution_mode": options.execution_mode.name,
        }
        return Runtime(lambda: session.run(None, feed), "onnxruntime", version, session, settings)
    # Core ML: only on macOS; the compute units choose CPU, GPU and Neural Engine.
    model = runtime.models.MLModel(path, compute_units=getattr(runtime.ComputeUnit, compute_units))
    description = model.get_spec().description.input[0]
    if description.type.WhichOneof("Type") == "imageType":
        from PIL import Image

        size = (description.type.imageType.width, description.type.imageType.height)
        feed = {description.name: Image.new("RGB", size)}
    else:
        shape = tuple(description.type.multiArrayType.shape)
        feed = {description.name: _random_input(shape, "float32")}
    settings = {"compute_units": compute_units}
    return Runtime(lambda: model.predict(feed), f"coreml ({compute_units})", version, model, settings)


def _openvino_settings(compiled) -> dict:
    """The precision, streams and mode the CPU plugin resolved; a property an older OpenVINO lacks
    is left out."""
    settings = {}
    for key, name in (
        ("inference_precision", "INFERENCE_PRECISION_HINT"),
        ("streams", "NUM_STREAMS"),
        ("performance_hint", "PERFORMANCE_HINT"),
    ):
        try:
            value = compiled.get_property(name)
        except Exception:  # an unknown property: pybind11's RuntimeError, or OpenVINO's own
            continue
        type_name = getattr(value, "get_type_name", None)
        settings[key] = type_name() if type_name else str(getattr(value, "name", value))
    return settings


def per_layer(handle, runtime: str) -> list:
    """Per-layer times where the runtime reports them (OpenVINO's performance counters), slowest
    first; empty elsewhere."""
    if runtime != "openvino":
        return []
    rows = [
        {"layer": c.node_name, "type": c.node_type, "ms": c.real_time.total_seconds() * 1e3}
        for c in handle.profiling_info
        if c.status.name == "EXECUTED"
    ]
    return sorted(rows, key=lambda r: -r["ms"])


def bench(
    path: str,
    *,
    threads: int,
    warmup: int,
    min_runs: int,
    min_seconds: float,
    max_runs: int,
    compute_units: str = "ALL",
    tick=None,
) -> dict:
    before = fingerprint(runtimes=False)
    started = time.perf_counter_ns()
    runtime = open_runtime(path, threads, compute_units)
    try:
        runtime.invoke()
    except Exception as e:  # a file that loads but cannot run (an op the runtime lacks)
        raise UnreadableArtifact(path, artifact_kind(path), runtime.name, e) from e
    cold_ns = time.perf_counter_ns() - started
    samples = timed_runs(
        runtime.invoke,
        warmup=warmup,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_runs=max_runs,
        tick=tick,
    )
    after = fingerprint(runtimes=False)
    return {
        **summarize(samples),
        "runs": len(samples),
        "cold_start_ms": cold_ns / 1e6,
        "statistic": "median",
        "threads": threads,
        "runtime": runtime.name,
        "runtime_version": runtime.version,
        "settings": runtime.settings,
        "throttled": throttled(before, after),
        "before": before,
        "after": after,
        "layers": per_layer(runtime.handle, runtime.name),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", nargs="?")
    parser.add_argument("--check", action="store_true", help="print the fingerprint and stop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50, help="minimum timed runs")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-runs", type=int, default=10_000)
    parser.add_argument("--compute-units", default="ALL", help="Core ML: " + ", ".join(COMPUTE_UNITS))
    args = parser.parse_args(argv)
    if args.check:
        print(json.dumps({"fingerprint": fingerprint()}))
        return 0
    if not args.artifact:
        parser.error("an artifact is needed (or --check)")
    try:
        import numpy  # noqa: F401
    except ImportError:
        print(
            json.dumps(
                {"error": "missing_runtime", "packages": ["numpy"], "message": "numpy is not installed"}
            )
        )
        return MISSING_RUNTIME_EXIT
    try:
        result = bench(
            args.artifact,
            threads=args.threads,
            warmup=args.warmup,
            min_runs=args.runs,
            min_seconds=args.min_seconds,
            max_runs=args.max_runs,
            compute_units=args.compute_units,
        )
    except MissingRuntime as e:
        print(json.dumps({"error": "missing_runtime", "packages": e.packages, "message": str(e)}))
        return MISSING_RUNTIME_EXIT
    except (ValueError, OSError) as e:
        print(json.dumps({"error": "bad_artifact", "message": str(e)}))
        return 2
    print(json.dumps({**result, "fingerprint": fingerprint()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
