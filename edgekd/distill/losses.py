"""Distillation losses, in a registry keyed by name. Each is `loss(student_logits, teacher_logits, labels)`.

Example:
    >>> import torch
    >>> from edgekd.distill.losses import make_loss
    >>> kd = make_loss("kd", temperature=4.0, alpha=0.9)
    >>> float(kd(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]))) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from edgekd._registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]
LOSSES: Registry[Callable[..., LossFn]] = Registry("KD loss")


@LOSSES.register("ce")
def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """Plain cross-entropy with the labels; the teacher is ignored (used to train teachers and baselines)."""

    def loss(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student, labels, label_smoothing=label_smoothing)

    return loss


@LOSSES.register("kd")
def hinton_kd(temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0) -> LossFn:
    """Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015):

        L = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)

    with KL averaged over the batch. The T² keeps the soft term's gradient scale independent of T.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")

    def loss(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        if teacher is None:
            raise ValueError("the 'kd' loss needs teacher logits")
        soft = F.kl_div(
            F.log_softmax(student / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        hard = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
        return alpha * temperature**2 * soft + (1 - alpha) * hard

    return loss


def make_loss(name: str, **params: Any) -> LossFn:
    return LOSSES.get(name)(**params)
