"""Export a PyTorch model to a deployable file. One table of formats drives validation, suggestions
and the benchmark loop; each format is one module (`export/<name>.py`) with an `export_model` function.

Example:
    >>> # artifact = export(model, "tflite", run / "exports", contract=contract)
    >>> # artifact.path.suffix
    >>> # '.tflite'
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd._io import write_json_atomic
from edgekd._registry import Registry
from edgekd.errors import DependencyError, ExportError

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class FormatSpec:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str  # key in edgekd.runtimes.RUNTIMES that runs it here
    extra: str  # the pip extra that installs its converter
    description: str


FORMATS: Registry[FormatSpec] = Registry("export format")
FORMATS.add(
    "tflite",
    FormatSpec("tflite", ".tflite", ("fp32",), "litert", "core", "TFLite/LiteRT flatbuffer via litert-torch"),
)


@dataclass(frozen=True)
class Contract:
    """What a consumer of the artifact needs to feed it and read it (STYLE.md item 7)."""

    arch: str
    input_name: str
    input_shape: tuple[int, ...]
    layout: str  # "NHWC" or "NCHW"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...]
    precision: str = "fp32"
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str
    contract: Contract

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def load_artifact(path: Path) -> Artifact:
    """An exported file and the contract in its sidecar JSON."""
    sidecar = sidecar_path(path)
    if not path.exists() or not sidecar.exists():
        raise ExportError(f"{path}: artifact or its sidecar {sidecar.name} is missing.")
    meta = json.loads(sidecar.read_text())
    contract = meta["contract"]
    for key in ("input_shape", "mean", "std", "labels"):
        contract[key] = tuple(contract[key])
    return Artifact(path, meta["format"], Contract(**contract))


def export(
    model: nn.Module,
    fmt: str,
    out_dir: Path,
    *,
    contract: Contract,
    stem: str = "model",
) -> Artifact:
    """Convert `model` (NCHW, float) to `fmt` at `contract.precision`; write the file and its sidecar
    atomically into `out_dir` and return the artifact. The artifact's parity is checked separately
    (`edgekd.export.parity`)."""
    spec = FORMATS.get(fmt)
    if contract.precision not in spec.precisions:
        raise ExportError(
            f"format {fmt!r} does not support precision {contract.precision!r} yet; supported: "
            f"{', '.join(spec.precisions)}."
        )
    try:
        module = importlib.import_module(f"edgekd.export.{fmt}")
    except ImportError as e:
        raise DependencyError(
            f"the {fmt} exporter needs a backend that is not installed ({e.name}); "
            f"install it with: pip install 'edgekd[{spec.extra}]'"
        ) from e
    path = Path(out_dir) / f"{stem}-{contract.precision}{spec.suffix}"
    written: Contract = module.export_model(model.eval(), path, contract)
    artifact = Artifact(path, fmt, written)
    write_json_atomic(artifact.sidecar, {"format": fmt, "file": path.name, "contract": asdict(written)})
    return artifact


def with_versions(contract: Contract, **versions: str) -> Contract:
    from edgekd import __version__

    return replace(contract, versions={"edgekd": __version__, **contract.versions, **versions})
