"""The distillation stage of `fit`: one student from one teacher, by the configured scheme, with the
teacher-output cache and replayable augmentation, and, for int8 targets, quantization-aware
fine-tuning with the exporter's own quantizer so that what is trained is what ships.

Every scheme is a few calls to the one trainer (`edgekd.distill.trainer.train`), each with its own
checkpoint directory, so an interrupted stage resumes inside whichever step it was in.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from edgekd.augment import Augmentation
from edgekd.data import DataSplits
from edgekd.distill.cache import TeacherOutputCache
from edgekd.distill.losses import make_loss, parse_loss_specs
from edgekd.distill.schemes import born_again, mutual_learning, teacher_assistant_chain
from edgekd.distill.trainer import EpochMetrics, TrainConfig, train
from edgekd.errors import ConfigError
from edgekd.progress import Observer, SilentObserver

log = logging.getLogger(__name__)

SCHEMES = ("offline", "online", "born-again", "assistant")
# Seen only through the cache key: with no augmentation every epoch shows the same single view.
IDENTITY_VIEW = Augmentation(draws=1, max_shift=0, hflip=False)


@dataclass(frozen=True)
class DistillPlan:
    """How the student learns. `scheme`:

    - ``offline``: the frozen teacher teaches the student (Hinton et al. 2015 and the other losses);
    - ``online``: a copy of the teacher and the student are trained together (Deep Mutual Learning);
    - ``born-again``: an offline student teaches a fresh copy of itself (Furlanello et al. 2018);
    - ``assistant``: the teacher teaches `assistant`, which teaches the student (Mirzadeh et al. 2020).

    `temperature`, `alpha` and `label_smoothing` reach every term of `loss` that takes them, in every
    scheme and step. `teacher_cache` stores the frozen teacher's logits for every augmented view once
    (offline, born-again and assistant). `qat_epochs` > 0 fine-tunes an int8 student quantization-aware.
    """

    scheme: str = "offline"
    loss: tuple[str, ...] = ("kd",)
    temperature: float = 4.0
    alpha: float = 0.9
    label_smoothing: float = 0.0
    teacher_cache: bool = True
    qat_epochs: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            from edgekd._registry import did_you_mean

            hint = did_you_mean(self.scheme, SCHEMES)
            raise ConfigError(f"unknown scheme {self.scheme!r}; valid: {', '.join(SCHEMES)}.{hint}")
        if self.scheme == "online" and tuple(self.loss) != ("kd",):
            raise ConfigError(
                f"--scheme online trains both networks with the mutual-learning loss (Zhang et al. 2018), "
                f"so it cannot be combined with --loss {' '.join(self.loss)}; drop one of the two."
            )
        if self.qat_epochs < 0:
            raise ConfigError(f"qat_epochs must be 0 or more, got {self.qat_epochs}")
        # Online, both networks learn the labels through the mutual-learning loss, which smooths them.
        if (
            self.label_smoothing
            and self.scheme != "online"
            and not any(hasattr(term, "label_smoothing") for term in self.losses().terms)
        ):
            raise ConfigError(
                f"--label-smoothing {self.label_smoothing:g} smooths the labels of a ce or kd term, and "
                f"--loss {' '.join(self.loss)} has none; add --loss ce or drop --label-smoothing."
            )

    def loss_params(self) -> dict[str, float]:
        """The hyperparameters shared by the terms of `loss`: each term takes those it has."""
        return {"temperature": self.temperature, "alpha": self.alpha, "label_smoothing": self.label_smoothing}

    def losses(self):
        return parse_loss_specs(self.loss, **self.loss_params())

    @property
    def caches_teacher(self) -> bool:
        """Whether the distillation steps read the frozen teacher from its logits cache: `teacher_cache`
        and a loss that reads logits alone. Feature maps and embeddings come from the teacher run live
        on every batch, so a cache filled for such a loss would never be read."""
        losses = self.losses()
        return self.teacher_cache and not (losses.needs_features or losses.needs_embedding)


@dataclass
class DistillResult:
    student: nn.Module  # the float student, trained
    history: list[EpochMetrics]  # the student's own epochs
    steps: dict[str, list[EpochMetrics]]  # every training step by name (assistant, generations, qat)
    description: str  # one sentence for the report
    quantized: nn.Module | None = None  # the QAT model, when the student was trained quantization-aware


def distil_student(
    make_student: Callable[[], nn.Module],
    teacher: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    plan: DistillPlan,
    *,
    make_assistant: Callable[[], nn.Module] | None = None,
    arch: str | None = None,
    cache_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    observer: Observer | None = None,
) -> DistillResult:
    """Train a student from `make_student()` by `plan.scheme`; see `DistillPlan`.

    `arch` names the student in messages. `cache_dir` holds the teacher-output caches (one per frozen
    teacher, keyed by its weights, the data and the augmentation, so a later run or search trial with
    the same teacher reuses it).
    """
    observer = observer or SilentObserver()
    teacher.eval()

    # The cache is keyed on the augmentation the trainer replays; with none, the identity view.
    config = config if config.augmentation else dataclasses.replace(config, augmentation=IDENTITY_VIEW)

    def cache_for(frozen: nn.Module) -> TeacherOutputCache | None:
        if not plan.teacher_cache or cache_dir is None:
            return None
        return TeacherOutputCache.open(
            cache_dir, frozen, data.fingerprint, config.augmentation, len(data.train), data.num_classes
        )

    # The quantization-aware step distils with kd alone and reads the cache whatever the plan's loss.
    step_cache_for = cache_for if plan.caches_teacher else (lambda frozen: None)

    def at(name: str) -> Path | None:
        return checkpoint_dir / name if checkpoint_dir else None

    steps: dict[str, list[EpochMetrics]] = {}
    if plan.scheme == "offline":
        student = make_student()
        history = train(
            student,
            data,
            config,
            loss=plan.losses(),
            teacher=teacher,
            teacher_cache=step_cache_for(teacher),
            checkpoint_dir=at("student"),
            observer=observer,
            description="distil",
        )
        description = f"distilled offline from the frozen teacher with {' + '.join(plan.loss)}"
    elif plan.scheme == "online":
        student = make_student()
        peer = copy.deepcopy(teacher).train()  # the teacher the caller holds stays as it is
        for p in peer.parameters():
            p.requires_grad_(True)
        history = mutual_learning(
            student,
            peer,
            data,
            config,
            temperature=plan.temperature,
            label_smoothing=plan.label_smoothing,
            checkpoint_dir=at("mutual"),
            observer=observer,
        )
        description = "trained online together with a copy of the teacher (deep mutual learning)"
    elif plan.scheme == "born-again":
        student, histories = born_again(
            make_student,
            teacher,
            data,
            config,
            generations=2,
            loss_specs=plan.loss,
            loss_params=plan.loss_params(),
            cache_for=step_cache_for,
            checkpoint_dir=at("born-again"),
            observer=observer,
        )
        steps["generation 1"] = histories[0]
        history = histories[-1]
        description = "born-again: generation 2 learnt from generation 1, which learnt from the teacher"
    else:
        if make_assistant is None:
            raise ConfigError("--scheme assistant needs an assistant model (--assistant ARCH).")
        assistant, student = make_assistant(), make_student()
        histories = teacher_assistant_chain(
            [teacher, assistant, student],
            data,
            config,
            loss_specs=plan.loss,
            loss_params=plan.loss_params(),
            cache_for=step_cache_for,
            checkpoint_dir=at("assistant-chain"),
            observer=observer,
        )
        steps["assistant"] = histories[0]
        history = histories[-1]
        description = "distilled through a teacher assistant (teacher → assistant → student)"
    steps["student"] = history

    if config.ema_decay:
        description += f", its weights an exponential moving average (decay {config.ema_decay:g})"
    quantized = None
    if plan.qat_epochs:
        qat = quantization_aware(
            student,
            teacher,
            data,
            config,
            plan,
            arch=arch,
            cache=cache_for(teacher),
            checkpoint_dir=at("qat"),
            observer=observer,
        )
        steps["qat"], quantized = qat.history, qat.model
        description += f", then fine-tuned int8 quantization-aware for {plan.qat_epochs} epochs"
    return DistillResult(student, history, steps, description, quantized)


@dataclass
class QuantizedStudent:
    model: nn.Module
    history: list[EpochMetrics]


def quantization_aware(
    student: nn.Module,
    teacher: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    plan: DistillPlan,
    *,
    arch: str | None = None,
    cache: TeacherOutputCache | None = None,
    checkpoint_dir: Path | None = None,
    observer: Observer | None = None,
) -> QuantizedStudent:
    """Fake-quantize a trained float `student` with the int8 TFLite exporter's PT2E quantizer and keep
    distilling it from the float teacher at a tenth of the learning rate.

    Response KD only: the captured graph has no timm feature taps, so feature and relation terms of
    `plan.loss` cannot be computed on it; the KD temperature, alpha and label smoothing are the plan's.
    """
    from edgekd.quantize import prepare_qat

    example = torch.stack([data.train[i][0] for i in range(min(2, len(data.train)))])
    qat = prepare_qat(student, example, arch=arch or type(student).__name__)
    qat_config = dataclasses.replace(config, epochs=plan.qat_epochs, lr=config.lr / 10, ema_decay=None)
    history = train(
        qat,
        data,
        qat_config,
        loss=make_loss("kd", **plan.loss_params()),
        teacher=teacher,
        teacher_cache=cache,
        checkpoint_dir=checkpoint_dir,
        observer=observer,
        description="quantization-aware",
    )
    return QuantizedStudent(qat.eval(), history)
