"""Shipping one artifact, the one path `fit` and `edgekd export` share: the contract from the inputs,
calibration when the precision needs it, the export, parity with PyTorch in the artifact's own
runtime, the parity gate, and the timing on this host.

`ship` reports, it never decides for its caller: an export the converter refuses, an artifact below
its parity gate and one whose runtime cannot exist here all come back as a `ShipResult` saying so
(`fit` raises on the first two, `edgekd export` prints a row for each). "Cannot run here" is the
runtime's own answer (`RuntimeUnavailableError` when a session is opened: Core ML off macOS): the
artifact's spec was validated by its exporter, and nothing here can execute it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.artifact import ARTIFACT_STEM, FORMATS, Artifact, make_contract
from edgekd.errors import ExportError, RuntimeUnavailableError
from edgekd.export import _is_qat_model, export

if TYPE_CHECKING:
    import numpy as np
    import torch
    import torch.nn as nn

    from edgekd.devices import LatencyStats
    from edgekd.export.parity import ParityGate, ParityReport
    from edgekd.preprocessing import Preprocessing
    from edgekd.progress import Observer


@dataclass(frozen=True)
class ExportInputs:
    """What every artifact is built and checked with: the model's input contract and real images."""

    preprocessing: Preprocessing
    images: torch.Tensor  # parity and accuracy images, NCHW, normalised
    targets: torch.Tensor  # their class indices
    calibration: torch.Tensor | None = None  # training images for static int8, NCHW, normalised


@dataclass(frozen=True)
class ShipResult:
    """What shipping one artifact found. `artifact` is None when the converter failed (`export_error`
    says why); `parity` is None then, and when the runtime cannot run here (`cannot_run_here` says
    why); `latency` is None when it was not asked for or could not be measured here."""

    format: str
    precision: str
    artifact: Artifact | None = None
    export_error: str | None = None
    cannot_run_here: str | None = None
    parity: ParityReport | None = None
    gate_failures: tuple[str, ...] = ()  # each gated metric the parity missed, in words
    latency: LatencyStats | None = None

    @property
    def failed_parity(self) -> bool:
        return bool(self.gate_failures)

    def gate_message(self) -> str:
        """The failures as one line that names the file, for an error or a table's detail."""
        path = self.artifact.path if self.artifact is not None else f"{self.format} {self.precision}"
        return f"{path}: " + "; ".join(self.gate_failures)


def export_for(
    model: nn.Module,
    fmt: str,
    precision: str,
    inputs: ExportInputs,
    *,
    arch: str,
    out_dir: Path,
    stem: str = ARTIFACT_STEM,
    options: dict[str, Any] | None = None,
) -> Artifact:
    """`ship`'s first step alone: the contract from `inputs`, the export, and its sidecar. `fit` keeps
    this step apart (its exported file is what a resumed run reads back); it raises `ExportError` where
    `ship` reports one.

    The int8 calibration set is used when the format calibrates that precision and `model` did not
    learn its ranges quantization-aware.

    Example:
        >>> import torch.nn as nn
        >>> export_for(nn.Identity(), "onnx", "int4", None, arch="x", out_dir=Path("."))
        Traceback (most recent call last):
        ...
        edgekd.errors.ExportError: onnx exports fp32, not 'int4'.
    """
    spec = FORMATS.get(fmt)
    if precision not in spec.precisions:
        raise ExportError(f"{fmt} exports {', '.join(spec.precisions)}, not {precision!r}.")
    contract = make_contract(arch, fmt, inputs.preprocessing, precision)
    calibrated = precision in spec.calibrated and not _is_qat_model(model)
    return export(
        model,
        fmt,
        out_dir,
        contract=contract,
        stem=stem,
        calibration=inputs.calibration if calibrated else None,
        options=options,
    )


def ship(
    model: nn.Module,
    fmt: str,
    precision: str,
    inputs: ExportInputs,
    gates: dict[str, ParityGate] | None,
    *,
    arch: str,
    out_dir: Path | None = None,
    stem: str = ARTIFACT_STEM,
    options: dict[str, Any] | None = None,
    exported: Artifact | None = None,
    reference: np.ndarray | None = None,
    threads: int = 1,
    latency: bool = True,
    observer: Observer | None = None,
    label: str = "",
) -> ShipResult:
    """Export `model` as `fmt` at `precision` into `out_dir`, compare it with PyTorch on
    `inputs.images`, gate it (`gates` by precision; None: a comparison reported, never gated) and,
    when `latency`, time it here.

    `exported`: the artifact of this model made earlier (a resumed `fit` keeps its exported files),
    checked instead of exporting again. `reference`: PyTorch's logits for `inputs.images`, when
    several artifacts of one model share them. `observer` sees the timing (`label` names it).

    Example:
        >>> import torch.nn as nn
        >>> shipped = ship(nn.Identity(), "onnx", "int4", None, None, arch="x", out_dir=Path("."))
        >>> shipped.artifact is None and shipped.export_error
        "onnx exports fp32, not 'int4'."
    """
    from edgekd.devices.local import measure_latency
    from edgekd.export.parity import compare_with, gate_failures, reference_logits

    if exported is None:
        try:
            artifact = export_for(
                model, fmt, precision, inputs, arch=arch, out_dir=out_dir, stem=stem, options=options
            )
        except ExportError as e:
            return ShipResult(fmt, precision, export_error=str(e))
    elif (exported.format, exported.contract.precision) != (fmt, precision):
        raise ExportError(
            f"{exported.path} is {exported.format} {exported.contract.precision}, not the "
            f"{fmt} {precision} asked to ship."
        )
    else:
        artifact = exported
    if reference is None:
        reference = reference_logits(model, inputs.images)
    try:
        report = compare_with(artifact, reference, inputs.images, inputs.targets, threads=threads)
    except RuntimeUnavailableError as e:
        return ShipResult(fmt, precision, artifact, cannot_run_here=str(e))
    failures = tuple(gate_failures(report, precision, gates)) if gates is not None else ()
    stats = None
    if latency:
        # Timed even below the gate: the caller reports the figure beside the failure (or refuses).
        if observer is not None:
            observer.stage("latency", label)
        stats = measure_latency(artifact, threads=threads, observer=observer)
    return ShipResult(fmt, precision, artifact, parity=report, gate_failures=failures, latency=stats)
