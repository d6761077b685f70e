"""Hardware targets: one YAML file per device, loaded into a frozen `Target`.

The shipped files live in `targets/`; a user adds their own in a directory given by `--targets-dir` or
`EDGEKD_TARGETS_PATH` (':'-separated). A file may `extends:` another target by name and override
fields (mappings merge key by key, everything else replaces). Every number needs a citation in
`sources:`; the `host` target instead sets `detect: true` and its compute and memory are detected.

Example:
    >>> from edgekd.targets import get_target
    >>> get_target("pi5").compute.cores
    4
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd._config import from_mapping, load_yaml
from edgekd._registry import Registry
from edgekd.errors import ConfigError, EdgeKDError
from edgekd.paths import shipped_dir

PRECISIONS = ("fp32", "fp16", "int8")
ESTIMATORS = ("roofline", "vela")


@dataclass(frozen=True)
class Compute:
    cpu: str
    cores: int
    clock_ghz: float
    peak_gflops: dict[str, float]  # per precision, the whole device (all cores, or the accelerator)
    accelerator: str | None = None  # an NPU that runs the model instead of the CPU cores

    def __post_init__(self) -> None:
        for precision, value in self.peak_gflops.items():
            if precision not in PRECISIONS:
                raise ValueError(f"compute.peak_gflops: unknown precision {precision!r}; use {PRECISIONS}.")
            if value <= 0:
                raise ValueError(f"compute.peak_gflops.{precision} must be positive, got {value}.")


@dataclass(frozen=True)
class Memory:
    ram_mb: float
    bandwidth_gbps: float
    sram_kb: float | None = None  # on-chip SRAM of a microcontroller-class target
    flash_mb: float | None = None


@dataclass(frozen=True)
class OpConstraints:
    """Op kinds (edgekd.analysis vocabulary) the runtime cannot run at all, or runs off the fast path."""

    unsupported: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()


@dataclass(frozen=True)
class LatencyModel:
    """Priors of the latency predictor until `profiles/<target>.csv` calibrates them, and which
    profile rows calibrate it (one runtime, precision and thread count)."""

    efficiency: float  # achieved share of peak compute
    per_layer_overhead_us: float
    invoke_overhead_us: float  # once per inference: entering the runtime, copying input and output
    memory_efficiency: float = 0.5  # achieved share of the memory bandwidth
    estimator: str = "roofline"  # or "vela": Arm's compiler estimates the NPU's time
    profile_runtime: str | None = None  # profile rows of this runtime calibrate; default: `runtime`

    def __post_init__(self) -> None:
        for name in ("efficiency", "memory_efficiency"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"latency_model.{name} must be in (0, 1], got {value}.")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"latency_model.estimator must be one of {ESTIMATORS}, got {self.estimator!r}.")


@dataclass(frozen=True)
class VelaConfig:
    """How Arm's Vela compiles for this NPU: names from Vela's own vela.ini and accelerator list."""

    accelerator: str = "ethos-u55-256"
    system_config: str = "Ethos_U55_High_End_Embedded"
    memory_mode: str = "Shared_Sram"


@dataclass(frozen=True)
class Budgets:
    latency_ms: float
    peak_ram_mb: float | None = None
    model_mb: float | None = None  # bytes of weights at the deployed precision (flash on an MCU)


@dataclass(frozen=True)
class Target:
    """A device: what it computes with, what it runs, and what a student must fit into."""

    name: str
    description: str
    compute: Compute
    memory: Memory
    runtime: str
    format: str
    precisions: tuple[str, ...]
    default_precision: str
    input_size: int
    threads: int
    latency_model: LatencyModel
    budgets: Budgets
    input_sizes: tuple[int, ...] = ()  # allowed resolutions; empty: only `input_size`
    ops: OpConstraints = field(default_factory=OpConstraints)
    deployment_target: str | None = None  # e.g. Core ML's minimum_deployment_target "iOS16"
    sources: dict[str, str] = field(default_factory=dict)  # dotted field -> citation
    delegate: str | None = None
    vela: VelaConfig | None = None  # an Ethos-U target: how its latency is estimated
    extends: str | None = None
    detect: bool = False  # compute and memory detected on this machine (the `host` target)

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"precisions: unknown {unknown}; use {list(PRECISIONS)}.")
        if self.default_precision not in self.precisions:
            raise ValueError(
                f"default_precision {self.default_precision!r} is not among "
                f"precisions {list(self.precisions)}."
            )
        missing_peaks = [p for p in self.precisions if p not in self.compute.peak_gflops]
        if missing_peaks:
            raise ValueError(f"compute.peak_gflops has no entry for {', '.join(missing_peaks)}.")
        if self.input_sizes and self.input_size not in self.input_sizes:
            raise ValueError(
                f"input_size {self.input_size} is not among input_sizes {list(self.input_sizes)}."
            )
        if self.threads < 0 or self.threads > self.compute.cores:
            raise ValueError(
                f"threads must be between 0 and compute.cores ({self.compute.cores}), got {self.threads}."
            )
        if self.latency_model.estimator == "vela" and self.vela is None:
            raise ValueError("latency_model.estimator is vela but the target has no vela: section.")
        uncited = [f for f in numeric_fields(self) if citation_for(f, self.sources) is None]
        if uncited:
            raise ValueError(f"every number needs a citation in sources:, missing for {', '.join(uncited)}.")

    @property
    def peak_gflops(self) -> float:
        return self.compute.peak_gflops[self.default_precision]

    @property
    def allowed_input_sizes(self) -> tuple[int, ...]:
        return self.input_sizes or (self.input_size,)

    @property
    def format_options(self) -> dict[str, dict[str, Any]]:
        """Options this target sets for its own format: its minimum deployment target (Core ML's)."""
        if self.deployment_target:
            return {self.format: {"deployment_target": self.deployment_target}}
        return {}

    @property
    def profile_runtime(self) -> str:
        return self.latency_model.profile_runtime or self.runtime


def numeric_fields(obj: object, prefix: str = "") -> list[str]:
    """Dotted names of every number in a (nested) dataclass, for the citation check."""
    names = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if f.name == "sources":
            continue
        if dataclasses.is_dataclass(value):
            names += numeric_fields(value, f"{path}.")
        elif isinstance(value, dict):
            names += [f"{path}.{k}" for k, v in value.items() if isinstance(v, (int, float))]
        elif _is_number(value) or (isinstance(value, tuple) and any(_is_number(v) for v in value)):
            names.append(path)
    return names


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def citation_for(field_path: str, sources: dict[str, str]) -> str | None:
    """The most specific citation of a dotted field; one on a parent ("compute.peak_gflops")
    covers its children."""
    parts = field_path.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in sources:
            return sources[".".join(parts[:i])]
    return None


def target_dirs(extra: tuple[Path, ...] = ()) -> tuple[Path, ...]:
    """Where targets are found: the shipped folder, `EDGEKD_TARGETS_PATH`, then `extra` (--targets-dir)."""
    from_env = tuple(Path(p) for p in os.environ.get("EDGEKD_TARGETS_PATH", "").split(os.pathsep) if p)
    return (shipped_dir("targets"), *from_env, *(Path(p) for p in extra))


@functools.cache
def target_registry(dirs: tuple[Path, ...] | None = None) -> Registry[Path]:
    """Target names to their YAML files (loaded on demand so one bad file does not hide the rest).
    A name defined twice raises, naming both files: a user target overrides by `extends:`, not by
    shadowing."""
    registry: Registry[Path] = Registry("target")
    for directory in dirs if dirs is not None else target_dirs():
        if not directory.is_dir():
            raise ConfigError(f"targets directory {directory} does not exist.")
        for path in sorted(directory.glob("*.yaml")):
            if path.stem in registry.names():
                raise ConfigError(
                    f"target {path.stem!r} is defined twice: {registry.get(path.stem)} and {path}. "
                    f"Give yours another name and `extends: {path.stem}` to override fields."
                )
            registry.add(path.stem, path)
    return registry


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolved_mapping(path: Path, registry: Registry[Path], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of target fields, got {type(data).__name__}.")
    parent = data.get("extends")
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: field 'extends' must be a target name, got {parent!r}.")
    if parent in seen or parent == path.stem:
        raise ConfigError(f"{path}: 'extends' forms a cycle: {' -> '.join((*seen, path.stem, parent))}.")
    try:
        parent_path = registry.get(parent)
    except EdgeKDError as e:
        raise ConfigError(f"{path}: extends an unknown target. {e}") from e
    base = _resolved_mapping(parent_path, registry, (*seen, path.stem))
    base = {k: v for k, v in base.items() if k not in ("name", "description", "extends")}
    own_sources = data.get("sources") or {}
    uncited = [p for p in _number_paths(data) if citation_for(p, own_sources) is None]
    if uncited:
        raise ConfigError(
            f"{path}: overrides {', '.join(uncited)} of {parent!r} but cites no source for the new value; "
            f"add it under sources: (the parent's citation is for the parent's number)."
        )
    return _merge(base, data)


def _number_paths(data: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in data.items():
        if key == "sources" and not prefix:
            continue
        if isinstance(value, dict):
            paths += _number_paths(value, f"{prefix}{key}.")
        elif _is_number(value) or (isinstance(value, list) and any(_is_number(v) for v in value)):
            paths.append(f"{prefix}{key}")
    return paths


def _with_detected_host(data: dict[str, Any]) -> dict[str, Any]:
    from edgekd.hostinfo import detect_host

    host = detect_host()
    how = "detected on this machine by edgekd.hostinfo"
    data = _merge(
        data,
        {
            "compute": {
                "cpu": host.cpu,
                "cores": host.cores,
                "clock_ghz": host.clock_ghz,
                "peak_gflops": {
                    "fp32": round(host.peak_gflops_fp32, 1),
                    "fp16": round(host.peak_gflops_fp32, 1),  # converters compute fp16 models in fp32 here
                    "int8": round(host.peak_gflops_fp32 * 4, 1),
                },
            },
            "memory": {"ram_mb": host.ram_mb, "bandwidth_gbps": host.bandwidth_gbps},
        },
    )
    data["sources"] = {
        **data.get("sources", {}),
        "compute": f"{how}: /proc/cpuinfo ({', '.join(host.isa) or 'no vector ISA found'}, "
        f"{host.flop_per_cycle} fp32 FLOP/cycle/core), os.cpu_count(), cpufreq",
        "memory.ram_mb": f"{how}: /proc/meminfo",
        "memory.bandwidth_gbps": f"{how}: best-of-5 copy of a 64 MB array (read + write bytes)",
    }
    return data


def load_target(path: Path, registry: Registry[Path] | None = None) -> Target:
    """Read one target file (resolving `extends:`); its file name must equal its `name:`."""
    data = _resolved_mapping(path, registry or target_registry())
    if data.get("detect") is True:
        data = _with_detected_host(data)
    target = from_mapping(Target, data, str(path))
    if target.name != path.stem:
        raise ConfigError(f"{path}: field 'name' is {target.name!r} but the file is named {path.stem!r}.")
    return target


def list_targets(dirs: tuple[Path, ...] = ()) -> list[str]:
    return target_registry(target_dirs(dirs)).names()


def get_target(name: str, dirs: tuple[Path, ...] = ()) -> Target:
    """The target called `name`, searched in the shipped targets, `EDGEKD_TARGETS_PATH` and `dirs`;
    an unknown name raises listing the valid ones and the closest match."""
    registry = target_registry(target_dirs(dirs))
    return load_target(registry.get(name), registry)
