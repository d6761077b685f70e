"""Logits, feature maps at chosen taps and the pooled embedding of a timm model, from one forward pass.

Taps are indices into the model's `feature_info` (one entry per stage for CNNs, per block for ViTs),
read through timm's `forward_intermediates`, so no module paths are hard-coded. The student's last N
stages are paired with the teacher's last N, counted from the end.

Example:
    >>> import timm, torch
    >>> model = timm.create_model("resnet10t", num_classes=10).eval()
    >>> taps = FeatureTaps(model, default_taps(model), embedding=True)
    >>> out = taps(torch.zeros(1, 3, 64, 64))
    >>> [f.shape[1] for f in out.features], tuple(out.embedding.shape)
    ([128, 256, 512], (1, 512))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgekd.distill.accelerator import module_device
from edgekd.distill.losses import DistillLoss, DistillOutputs
from edgekd.errors import ConfigError, EdgeKDError

DEFAULT_NUM_TAPS = 3


@dataclass(frozen=True)
class TappedOutputs:
    logits: torch.Tensor
    features: list[torch.Tensor]  # NCHW, one per tap, in tap order
    embedding: torch.Tensor | None  # what the classifier sees: pooled, pre-logit features

    def to(self, device: torch.device) -> TappedOutputs:
        embedding = self.embedding.to(device) if self.embedding is not None else None
        return TappedOutputs(self.logits.to(device), [f.to(device) for f in self.features], embedding)


def _arch(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def _feature_info(model: nn.Module) -> list[dict]:
    info = getattr(model, "feature_info", None)
    if not hasattr(model, "forward_intermediates") or not info:
        raise EdgeKDError(
            f"{_arch(model)} has no timm forward_intermediates()/feature_info, which losses on feature "
            "maps (fitnet, at, sp) need to tap its stages. Choose a timm model that has them, or a loss "
            "on logits or embeddings only (kd, dkd, logit_mse, rkd, ce)."
        )
    return list(info)


def default_taps(model: nn.Module, num_taps: int = DEFAULT_NUM_TAPS) -> list[int]:
    """The indices of the model's last `num_taps` stages (all of them if it has fewer)."""
    count = len(_feature_info(model))
    return list(range(max(count - num_taps, 0), count))


def pair_taps(
    student: nn.Module, teacher: nn.Module, num_taps: int = DEFAULT_NUM_TAPS
) -> tuple[list[int], list[int]]:
    """Student and teacher taps, paired from the end: the student's last stage with the teacher's last,
    and so on, for as many stages as the shallower model has (at most `num_taps`). Counting from the
    end aligns the deep, semantic stages, whose maps distillation transfers best, whatever the depths."""
    shared = min(num_taps, len(_feature_info(student)), len(_feature_info(teacher)))
    return default_taps(student, shared), default_taps(teacher, shared)


class FeatureTaps:
    """Calls a timm model once and returns its logits, its maps at `taps` and, with `embedding`, the
    pooled vector its classifier receives. The logits are exactly `model(x)`'s: the same
    `forward_intermediates` + `forward_head` path runs, and the embedding is read by a hook on the
    classifier's input rather than by a second head pass (which would draw another dropout mask).
    Without taps or embedding it is plain `model(x)`, so any `nn.Module` works.

    Example:
        >>> import timm, torch
        >>> model = timm.create_model("lcnet_050", num_classes=10).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> torch.equal(FeatureTaps(model, [-1])(x).logits, model(x))
        True
    """

    def __init__(self, model: nn.Module, taps: Sequence[int] = (), *, embedding: bool = False) -> None:
        self.model, self.embedding = model, embedding
        self.taps: list[int] = []
        if taps:
            count = len(_feature_info(model))
            for tap in taps:
                if not -count <= tap < count:
                    raise ConfigError(
                        f"Tap {tap} is out of range: {_arch(model)} has {count} feature stages."
                    )
                self.taps.append(tap % count)
        if embedding and not isinstance(getattr(model, "get_classifier", lambda: None)(), nn.Module):
            raise EdgeKDError(
                f"{_arch(model)} has no timm get_classifier() module, whose input is the embedding that "
                "the rkd loss reads."
            )

    def __call__(self, x: torch.Tensor) -> TappedOutputs:
        captured: list[torch.Tensor] = []
        hook = None
        if self.embedding:
            hook = self.model.get_classifier().register_forward_pre_hook(
                lambda module, args: captured.append(args[0])
            )
        try:
            if self.taps:
                final, features = self.model.forward_intermediates(x, indices=self.taps, output_fmt="NCHW")
                logits = self.model.forward_head(final)
            else:
                features, logits = [], self.model(x)
        finally:
            if hook is not None:
                hook.remove()
        if self.embedding and len(captured) != 1:
            raise EdgeKDError(
                f"{_arch(self.model)}'s classifier ran {len(captured)} times in one forward pass; the rkd "
                "loss needs exactly one pooled embedding per input."
            )
        return TappedOutputs(logits, list(features), captured[0] if self.embedding else None)

    def channels(self, input_size: int | tuple[int, int]) -> list[int]:
        """The channel count of each tapped map, from a dry run on one blank image in eval mode (so
        that batch-norm statistics and the random state are left untouched)."""
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        parameter = next(self.model.parameters(), None)
        device = parameter.device if parameter is not None else None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                features = self(torch.zeros(1, 3, height, width, device=device)).features
        finally:
            self.model.train(was_training)
        return [f.shape[1] for f in features]


def feature_channels(model: nn.Module, input_size: int | tuple[int, int], taps: Sequence[int]) -> list[int]:
    """The channel counts of `model`'s maps at `taps` for inputs of `input_size` pixels.

    Example:
        >>> import timm
        >>> feature_channels(timm.create_model("resnet10t"), 64, [-2, -1])
        [256, 512]
    """
    return FeatureTaps(model, taps).channels(input_size)


class DistillForward:
    """One batch's forward pass for `loss`: the student, and the teacher under `no_grad`, each run once,
    through feature taps only when the loss reads maps or embeddings. Building it pairs the taps and
    calls `loss.prepare` with their channel counts, so do it before creating the optimiser.

    Example:
        >>> import timm, torch
        >>> from edgekd.distill.losses import make_loss
        >>> student = timm.create_model("lcnet_050", num_classes=10)
        >>> teacher = timm.create_model("resnet10t", num_classes=10).eval()
        >>> loss = make_loss("fitnet")
        >>> forward = DistillForward(student, teacher, loss, input_size=64)
        >>> [tuple(a.weight.shape) for a in loss.adapters]
        [(128, 64, 1, 1), (256, 128, 1, 1), (512, 256, 1, 1)]
        >>> loss(forward(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]))).item() > 0
        True
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        loss: DistillLoss,
        input_size: int | tuple[int, int],
        num_taps: int = DEFAULT_NUM_TAPS,
    ) -> None:
        if loss.needs_teacher and teacher is None:
            raise ConfigError(f"The loss {loss.name!r} needs a teacher; pass one, or train with 'ce' alone.")
        student_taps: list[int] = []
        teacher_taps: list[int] = []
        if loss.needs_features:
            student_taps, teacher_taps = pair_taps(student, teacher, num_taps)
        self.student = FeatureTaps(student, student_taps, embedding=loss.needs_embedding)
        # The teacher runs only for a loss that reads it (teacher-free losses leave it out of the step).
        self.teacher = None
        if loss.needs_teacher:
            self.teacher = FeatureTaps(teacher, teacher_taps, embedding=loss.needs_embedding)
        if loss.needs_features:
            loss.prepare(self.student.channels(input_size), self.teacher.channels(input_size))
        self.loss_needs_maps_or_embedding = loss.needs_features or loss.needs_embedding

    @property
    def needs_live_teacher(self) -> bool:
        """Whether the teacher must run on each batch: it must for maps and embeddings; for logits
        alone a cache can stand in (`teacher_logits=`)."""
        return self.teacher is not None and (self.loss_needs_maps_or_embedding)

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None
    ) -> DistillOutputs:
        student = self.student(x)
        if self.teacher is None:
            return DistillOutputs(student.logits, labels, student_embedding=student.embedding)
        if teacher_logits is not None and not self.needs_live_teacher:
            return DistillOutputs(student.logits, labels, teacher_logits, student_embedding=student.embedding)
        with torch.no_grad():
            teacher = self.teacher(x.to(module_device(self.teacher.model), non_blocking=True))
        if teacher.logits.device != x.device:  # a teacher that computes elsewhere (ONNX Runtime: CPU)
            teacher = teacher.to(x.device)
        return DistillOutputs(
            student.logits,
            labels,
            teacher.logits,
            student.features,
            teacher.features,
            student.embedding,
            teacher.embedding,
        )


class DistillStep(nn.Module):
    """The trained part of one distillation step as one module, so that `DistributedDataParallel` can
    wrap it: the student, its feature taps and the loss with its own parameters (the FitNets adapters)
    are submodules, and `forward(x, labels, teacher_logits)` returns the batch's loss, computed from
    the `DistillOutputs` that `DistillForward` fills in. Every trained parameter is thus used inside
    the wrapped forward, and DDP averages all their gradients, bucketed and overlapped with backward.
    The frozen teacher is held outside the module's parameters: DDP neither broadcasts nor reduces it.

    Example:
        >>> import timm, torch
        >>> from edgekd.distill.losses import make_loss
        >>> student = timm.create_model("lcnet_050", num_classes=10)
        >>> teacher = timm.create_model("resnet10t", num_classes=10).eval()
        >>> step = DistillStep(student, teacher, make_loss("fitnet"), input_size=64)
        >>> sorted({name.split(".")[0] for name, _ in step.named_parameters()})
        ['loss', 'student']
        >>> step(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])).item() > 0
        True
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        loss: DistillLoss,
        input_size: int | tuple[int, int],
        num_taps: int = DEFAULT_NUM_TAPS,
    ) -> None:
        super().__init__()
        # Built first: it sizes the loss's own parameters, which the module then holds.
        self.models = DistillForward(student, teacher, loss, input_size, num_taps)
        self.student, self.loss = student, loss

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.loss(self.models(x, labels, teacher_logits))
