"""What every distillation loss is built on: the batch it reads (`DistillOutputs`), the base class
(`DistillLoss`) and the checks of its hyperparameters. The losses themselves are in `response_losses`
(on the logits) and `feature_losses` (on feature maps and embeddings); `edgekd.distill.losses`
registers them by name and composes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgekd.errors import ConfigError


@dataclass(frozen=True)
class DistillOutputs:
    """What one batch's forward pass produced. Feature lists are tap-aligned: `student_features[i]`
    is distilled towards `teacher_features[i]`; maps are NCHW and may differ in channels and size."""

    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_features: Sequence[torch.Tensor] = ()
    teacher_features: Sequence[torch.Tensor] = ()
    student_embedding: torch.Tensor | None = None
    teacher_embedding: torch.Tensor | None = None


class DistillLoss(nn.Module):
    """Base of every loss. The `needs_*` flags tell the trainer which forward pass to run."""

    name: str = ""  # the registry key (`edgekd.distill.losses.LOSSES`)
    needs_teacher: bool = False
    # Maps and embeddings come in student/teacher pairs, so a loss that reads them needs a teacher too.
    needs_features: bool = False  # feature maps at the paired taps
    needs_embedding: bool = False  # the pooled pre-logit vectors

    def prepare(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        """Build parameters that depend on the tapped maps' channel counts (one entry per tap pair).
        Called before the optimiser is created, so that it trains them; a no-op unless overridden."""

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        raise NotImplementedError

    def _teacher_logits(self, outputs: DistillOutputs) -> torch.Tensor:
        if outputs.teacher_logits is None:
            raise ConfigError(
                f"The {self.name!r} loss needs the teacher's logits: pass a teacher to train()."
            )
        return outputs.teacher_logits

    def _feature_pairs(self, outputs: DistillOutputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        student, teacher = list(outputs.student_features), list(outputs.teacher_features)
        if not student or len(student) != len(teacher):
            raise ConfigError(
                f"The {self.name!r} loss needs feature maps at paired student and teacher taps, got "
                f"{len(student)} and {len(teacher)}: run the models through "
                "edgekd.distill.features.DistillForward."
            )
        return list(zip(student, teacher))

    def _embeddings(self, outputs: DistillOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        if outputs.student_embedding is None or outputs.teacher_embedding is None:
            raise ConfigError(
                f"The {self.name!r} loss needs the student's and the teacher's pooled embeddings: run the "
                "models through edgekd.distill.features.DistillForward."
            )
        return outputs.student_embedding.flatten(1), outputs.teacher_embedding.flatten(1)


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_temperature(temperature: float) -> None:
    require(temperature > 0, f"temperature must be positive, got {temperature}")


def check_label_smoothing(label_smoothing: float) -> None:
    require(0 <= label_smoothing < 1, f"label_smoothing must be in [0, 1), got {label_smoothing}")


def check_weights(**weights: float) -> None:
    for key, value in weights.items():
        require(math.isfinite(value) and value >= 0, f"{key} must be a finite number >= 0, got {value}")
