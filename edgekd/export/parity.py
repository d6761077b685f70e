"""Parity of an exported artifact with the PyTorch model it came from, on real images, in the real runtime,
and the gate an artifact must pass to ship (per precision, from config/parity.yaml).

Example:
    >>> from edgekd.export.parity import load_gates
    >>> load_gates()["int8"].min_top1_agreement  # check_parity raises ExportError below it
    0.9
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edgekd._config import from_mapping, load_yaml
from edgekd.artifact import Artifact
from edgekd.errors import ConfigError, ExportError
from edgekd.paths import shipped_dir
from edgekd.runtimes import open_session, predict, prepare_input


@dataclass(frozen=True)
class ParityGate:
    """The least agreement with PyTorch an artifact of one precision must show; None: not gated."""

    min_top1_agreement: float | None = None
    min_cosine_similarity: float | None = None
    max_accuracy_drop: float | None = None  # PyTorch accuracy minus the artifact's, as a fraction


def load_gates(path: Path | None = None) -> dict[str, ParityGate]:
    """Gates by precision from `path` (default: the shipped config/parity.yaml)."""
    from edgekd.targets import PRECISIONS

    path = Path(path) if path else shipped_dir("config") / "parity.yaml"
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must map precisions ({', '.join(PRECISIONS)}) to gates.")
    unknown = sorted(set(raw) - set(PRECISIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown precision(s) {unknown}; use {list(PRECISIONS)}.")
    return {str(k): from_mapping(ParityGate, v or {}, str(path), f"{k}.") for k, v in raw.items()}


@dataclass(frozen=True)
class ParityReport:
    samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    cosine_similarity: float
    torch_accuracy: float
    artifact_accuracy: float


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> ParityReport:
    diff = np.abs(reference - candidate)
    cosine = (reference * candidate).sum(1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1) + 1e-12
    )
    return ParityReport(
        samples=len(labels),
        top1_agreement=float((reference.argmax(1) == candidate.argmax(1)).mean()),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        cosine_similarity=float(cosine.mean()),
        torch_accuracy=float((reference.argmax(1) == labels).mean()),
        artifact_accuracy=float((candidate.argmax(1) == labels).mean()),
    )


def check_parity(
    artifact: Artifact,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    threads: int = 1,
    gate: bool = True,
    gates: dict[str, ParityGate] | None = None,
) -> ParityReport:
    """Run `images` (NCHW, normalised) through the artifact and through `model`; raise `ExportError`
    when the report fails the gate of the artifact's precision (`gates`, default `load_gates()`),
    unless `gate` is off: a comparison that is reported, not shipped."""
    report = compare_with(artifact, reference_logits(model, images), images, labels, threads=threads)
    if gate:
        failures = gate_failures(report, artifact.contract.precision, gates)
        if failures:
            raise ExportError(f"{artifact.path}: " + "; ".join(failures) + ".")
    return report


def reference_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """PyTorch's logits for `images`, the reference every artifact of `model` is compared with;
    computed once when several artifacts are checked on the same images."""
    with torch.no_grad():
        return model.eval()(images).numpy()


def compare_with(
    artifact: Artifact, reference: np.ndarray, images: torch.Tensor, labels: torch.Tensor, *, threads: int = 1
) -> ParityReport:
    """The artifact, run in its own runtime on `images`, against precomputed `reference` logits."""
    session = open_session(artifact, threads)
    candidate = predict(session, prepare_input(images.numpy(), artifact.contract))
    return compare(reference, candidate, labels.numpy())


def gate_failures(
    report: ParityReport, precision: str, gates: dict[str, ParityGate] | None = None
) -> list[str]:
    """Each gated metric `report` misses, as '<metric> ... is <value>, below the <precision> gate of <t>'."""
    gates = load_gates() if gates is None else gates
    if precision not in gates:
        raise ConfigError(f"the parity config has no gate for precision {precision!r}; add one.")
    g = gates[precision]
    n = report.samples
    failures = []
    if g.min_top1_agreement is not None and report.top1_agreement < g.min_top1_agreement:
        failures.append(
            f"top-1 agreement with PyTorch is {report.top1_agreement:.4f} on {n} images, below the "
            f"{precision} gate of {g.min_top1_agreement}"
        )
    if g.min_cosine_similarity is not None and report.cosine_similarity < g.min_cosine_similarity:
        failures.append(
            f"cosine similarity with PyTorch's logits is {report.cosine_similarity:.6f} on {n} images, "
            f"below the {precision} gate of {g.min_cosine_similarity}"
        )
    drop = report.torch_accuracy - report.artifact_accuracy
    if g.max_accuracy_drop is not None and drop > g.max_accuracy_drop:
        failures.append(
            f"accuracy drop from PyTorch is {drop:.4f} ({report.torch_accuracy:.4f} -> "
            f"{report.artifact_accuracy:.4f}) on {n} images, above the {precision} gate of "
            f"{g.max_accuracy_drop}"
        )
    return failures
