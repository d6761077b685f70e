"""Distillation schemes beyond one frozen teacher: online (mutual) learning, born-again
self-distillation and teacher-assistant chains. Each is a few calls to the one trainer, so every
scheme checkpoints, resumes, shows progress and runs data-parallel the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd.data import DataSplits
from edgekd.distill.cache import TeacherOutputCache
from edgekd.distill.losses import DistillLoss, DistillOutputs, parse_loss_specs
from edgekd.distill.trainer import EpochMetrics, TrainConfig, train
from edgekd.progress import Observer

# Offline schemes take an optional `cache_for(teacher)` that opens the teacher-output cache for one
# teacher of the chain (or returns None to run it live): each link's teacher is frozen while it teaches.
CacheFactory = Callable[[nn.Module], TeacherOutputCache | None]


class MutualPair(nn.Module):
    """Two networks trained together. `forward` returns the student's logits (so evaluation and export
    see the student) and keeps the peer's logits of the same batch for `MutualLoss`."""

    def __init__(self, student: nn.Module, peer: nn.Module) -> None:
        super().__init__()
        self.student, self.peer = student, peer
        self.peer_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.peer_logits = self.peer(x) if self.training else None
        return self.student(x)


class MutualLoss(DistillLoss):
    """Deep Mutual Learning, Zhang, Xiang, Hospedales & Lu, CVPR 2018: each network learns the labels
    and the other's predictions,

        L = CE(s, y) + CE(p, y) + T² · KL(σ(p/T) ‖ σ(s/T)) + T² · KL(σ(s/T) ‖ σ(p/T))

    with the target side of each KL detached, so both networks are updated in the same step (the
    paper alternates the two updates; the joint step is the usual implementation). `label_smoothing`
    smooths both label terms (the paper has none)."""

    name = "mutual"
    needs_teacher = False

    def __init__(self, pair: MutualPair, temperature: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self._pair = [pair]  # a plain list: the pair's parameters belong to the model, not to the loss
        self.temperature, self.label_smoothing = temperature, label_smoothing

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        student, peer, labels, t = (
            outputs.student_logits,
            self._pair[0].peer_logits,
            outputs.labels,
            self.temperature,
        )
        if peer is None:
            raise RuntimeError("MutualLoss needs MutualPair's peer logits of the same (training) batch")

        def kl(target: torch.Tensor, learner: torch.Tensor) -> torch.Tensor:
            return F.kl_div(
                F.log_softmax(learner / t, 1),
                F.log_softmax(target.detach() / t, 1),
                reduction="batchmean",
                log_target=True,
            )

        return (
            F.cross_entropy(student, labels, label_smoothing=self.label_smoothing)
            + F.cross_entropy(peer, labels, label_smoothing=self.label_smoothing)
            + t**2 * (kl(peer, student) + kl(student, peer))
        )


def mutual_learning(
    student: nn.Module,
    peer: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    *,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    checkpoint_dir: Path | None = None,
    observer: Observer | None = None,
) -> list[EpochMetrics]:
    """Online distillation: `student` and `peer` (e.g. a larger teacher) are trained together from
    the start; both end up trained in place. The history's metrics are the student's."""
    pair = MutualPair(student, peer)
    history = train(
        pair,
        data,
        config,
        loss=MutualLoss(pair, temperature, label_smoothing),
        checkpoint_dir=checkpoint_dir,
        observer=observer,
        description="mutual learning",
    )
    student.eval()
    peer.eval()
    return history


def born_again(
    make_student: Callable[[], nn.Module],
    teacher: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    *,
    generations: int = 2,
    loss_specs: Sequence[str] = ("kd",),
    loss_params: Mapping[str, Any] | None = None,
    cache_for: CacheFactory | None = None,
    checkpoint_dir: Path | None = None,
    observer: Observer | None = None,
) -> tuple[nn.Module, list[list[EpochMetrics]]]:
    """Born-again networks, Furlanello et al., ICML 2018: generation 1 is distilled from `teacher`;
    every later generation is a fresh copy of the same architecture distilled from the one before.
    Every generation's loss is `parse_loss_specs(loss_specs, **loss_params)`."""
    if generations < 1:
        raise ValueError(f"generations must be at least 1, got {generations}")
    histories = []
    current_teacher = teacher
    for generation in range(1, generations + 1):
        student = make_student()
        histories.append(
            train(
                student,
                data,
                config,
                loss=parse_loss_specs(loss_specs, **(loss_params or {})),
                teacher=current_teacher,
                teacher_cache=cache_for(current_teacher) if cache_for else None,
                checkpoint_dir=checkpoint_dir / f"generation-{generation}" if checkpoint_dir else None,
                observer=observer,
                description=f"born-again generation {generation}",
            )
        )
        current_teacher = student.eval()
    return current_teacher, histories


def teacher_assistant_chain(
    chain: Sequence[nn.Module],
    data: DataSplits,
    config: TrainConfig,
    *,
    loss_specs: Sequence[str] = ("kd",),
    loss_params: Mapping[str, Any] | None = None,
    cache_for: CacheFactory | None = None,
    checkpoint_dir: Path | None = None,
    observer: Observer | None = None,
) -> list[list[EpochMetrics]]:
    """Teacher-assistant knowledge distillation, Mirzadeh et al., AAAI 2020: when the capacity gap is
    large, the trained teacher `chain[0]` teaches an intermediate model, which teaches the next, down
    to the student `chain[-1]`. Every model after the first is trained in place, each step with the
    loss `parse_loss_specs(loss_specs, **loss_params)`."""
    if len(chain) < 2:
        raise ValueError("a chain needs at least a teacher and a student")
    histories = []
    for step, (teacher, student) in enumerate(itertools.pairwise(chain), start=1):
        loss: DistillLoss = parse_loss_specs(loss_specs, **(loss_params or {}))
        histories.append(
            train(
                student,
                data,
                config,
                loss=loss,
                teacher=teacher.eval(),
                teacher_cache=cache_for(teacher) if cache_for else None,
                checkpoint_dir=checkpoint_dir / f"step-{step}" if checkpoint_dir else None,
                observer=observer,
                description=f"assistant chain step {step}/{len(chain) - 1}",
            )
        )
        student.eval()
    return histories
