"""Parity of an exported artifact with the PyTorch model it came from, on real images, in the real runtime.

Example:
    >>> # report = check_parity(artifact, model, images, labels)
    >>> # report.top1_agreement
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from edgekd.errors import ExportError
from edgekd.export import Artifact
from edgekd.runtimes import open_session, predict, prepare_input

# Minimum top-1 agreement per precision before an artifact is accepted.
MIN_AGREEMENT = {"fp32": 0.995, "fp16": 0.995, "int8": 0.97}


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
) -> ParityReport:
    """Run `images` (NCHW, normalised) through the artifact and through `model`; raise `ExportError`
    when top-1 agreement is below the precision's threshold (unless `gate` is off: a comparison that
    is reported, not shipped)."""
    with torch.no_grad():
        reference = model.eval()(images).numpy()
    session = open_session(artifact, threads)
    candidate = predict(session, prepare_input(images.numpy(), artifact.contract))
    report = compare(reference, candidate, labels.numpy())
    threshold = MIN_AGREEMENT[artifact.contract.precision]
    if gate and report.top1_agreement < threshold:
        raise ExportError(
            f"{artifact.path}: top-1 agreement with PyTorch is {report.top1_agreement:.4f} on "
            f"{report.samples} images, below the {artifact.contract.precision} gate of {threshold}."
        )
    return report
