"""Hardware targets: one YAML file per device in `targets/`, loaded into a frozen `Target`.

Example:
    >>> from edgekd.targets import get_target
    >>> get_target("pi5").compute.cores
    4
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

from edgekd._config import from_mapping, load_yaml
from edgekd._registry import Registry
from edgekd._resources import shipped_dir
from edgekd.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Compute:
    cpu: str
    cores: int
    clock_ghz: float
    peak_gflops: dict[str, float]  # per precision

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


@dataclass(frozen=True)
class LatencyModel:
    """The analytic estimate's two knobs until `profiles/` calibrates them."""

    efficiency: float  # achieved share of peak compute
    per_layer_overhead_us: float

    def __post_init__(self) -> None:
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"latency_model.efficiency must be in (0, 1], got {self.efficiency}.")


@dataclass(frozen=True)
class Budgets:
    latency_ms: float
    peak_ram_mb: float | None = None
    model_mb: float | None = None


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
    sources: dict[str, str] = field(default_factory=dict)  # dotted field -> citation
    delegate: str | None = None

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"precisions: unknown {unknown}; use {list(PRECISIONS)}.")
        if self.default_precision not in self.precisions:
            raise ValueError(
                f"default_precision {self.default_precision!r} is not among "
                f"precisions {list(self.precisions)}."
            )
        if self.default_precision not in self.compute.peak_gflops:
            raise ValueError(f"compute.peak_gflops has no entry for {self.default_precision!r}.")
        uncited = [f for f in numeric_fields(self) if citation_for(f, self.sources) is None]
        if uncited:
            raise ValueError(f"every number needs a citation in sources:, missing for {', '.join(uncited)}.")

    @property
    def peak_gflops(self) -> float:
        return self.compute.peak_gflops[self.default_precision]


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
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            names.append(path)
    return names


def citation_for(field_path: str, sources: dict[str, str]) -> str | None:
    """The most specific citation of a dotted field; one on a parent ("compute.peak_gflops")
    covers its children."""
    parts = field_path.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in sources:
            return sources[".".join(parts[:i])]
    return None


def load_target(path: Path) -> Target:
    """Read one target file; the file name (without .yaml) must equal its `name:`."""
    target = from_mapping(Target, load_yaml(path), str(path))
    if target.name != path.stem:
        raise ConfigError(f"{path}: field 'name' is {target.name!r} but the file is named {path.stem!r}.")
    return target


@functools.cache
def target_registry(directory: Path | None = None) -> Registry[Path]:
    """Target names to their YAML files (loaded on demand so one bad file does not hide the rest)."""
    registry: Registry[Path] = Registry("target")
    for path in sorted((directory or shipped_dir("targets")).glob("*.yaml")):
        registry.add(path.stem, path)
    return registry


def list_targets() -> list[str]:
    return target_registry().names()


def get_target(name: str) -> Target:
    """The target called `name`; an unknown name raises listing the valid ones and the closest match."""
    return load_target(target_registry().get(name))
