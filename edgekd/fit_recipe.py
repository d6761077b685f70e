"""What a `FitConfig` means for the parts it configures: the distillation plan, the training recipe
(batch size, learning rate, augmentation), the flip decision and the checks
on the teacher and assistant that run before a run directory exists.

Example:
    >>> from edgekd.fit_config import FitConfig
    >>> default_batch_size(1257, 30), default_batch_size(6000, 8), default_batch_size(18_900, 15)
    (16, 32, 64)
    >>> default_epochs(1259), default_epochs(700), default_epochs(6000)  # digits, small EuroSAT
    (30, 53, 15)
    >>> make_train_config(FitConfig.from_options(epochs=3, batch_size=32, lr=0.05), 32).epochs
    3
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import ConfigError
from edgekd.fit_config import FitConfig

if TYPE_CHECKING:
    from edgekd.distill.stage import DistillPlan

log = logging.getLogger(__name__)

# The default batch (default_batch_size): the largest of these that gives the whole training at least
# MIN_TRAINING_STEPS optimizer steps. A short training is short of updates before it is short of images:
# at 8 epochs of 6,000 and 10,000 images mobilenetv3_small_050 distilled 1.0 and 0.6 points better at
# batch 32 (1,500-2,500 steps) than at 64 over six runs against three (level at 32 px), and 3 better at
# 64 than at 128 on one seed at 32 px (benchmarks/results/recipe-findings.md);
# a run long enough to take batch 64 (15 epochs of the 18,900 EuroSAT images: 4,440 steps) keeps it.
BATCH_SIZES, MIN_TRAINING_STEPS = (64, 32, 16), 1_500
# Small data (`is_small_data`): fewer training images than give batch 64 an epoch of 50 steps.
SMALL_DATA_IMAGES = 3_200
# The final training on small data (`is_small_data`) ships an exponential moving average of its weights
# when --ema-decay names none: with ~1,200 optimizer steps, where the last weights land decided a
# digits student's test accuracy within several points from seed to seed (benchmarks/results/
# digits-final-recipe.md). 0.99 averages about the last 100 steps, an epoch or so of a small data set.
SMALL_DATA_EMA_DECAY = 0.99
# The epochs when --epochs names none: DEFAULT_EPOCHS, and on small data as many as show the student at
# least SMALL_DATA_MIN_IMAGES_SEEN training images. At 15 epochs of digits (18,885 images, 1,185 steps
# at batch 16) the smallest student, lcnet_035, kept 95.5-97.0 % of its teacher's test accuracy over
# seeds 0-2 and was still learning; with 30 (37,770 images, 2,370 steps) `make fit` shipped it at
# 98.1-99.6 % on the same seeds, one full training each (benchmarks/results/digits-confirm-search.md).
# Images, not steps: a larger --batch-size then costs no more time, where a step minimum would have
# made batch 64 train 119 epochs of digits.
DEFAULT_EPOCHS, SMALL_DATA_MIN_IMAGES_SEEN = 15, 37_000


# The loss when --loss names none (`default_loss`). Similarity-preserving KD (Tung & Mori 2019: the
# student's batch similarity matrices of its last three stages matched to the teacher's) beside Hinton
# KD distilled mobilenetv3_small_050 better than KD alone on all three data sets measured, three seeds
# each at 8 epochs: EuroSAT 64 px 80.71 % against 79.84, 32 px 73.97 against 71.55, Fashion-MNIST 82.52
# against 81.00; the plain PyTorch loop's KD student averaged 77.51, 69.38 and 79.97
# (benchmarks/results/recipe-findings.md).
# It reads the teacher's maps, so the teacher runs on every batch instead of from its logits cache.
# Logits alone (kd) where that is not measured or cannot be: small data (where the teacher run on every
# batch would also lengthen `make fit`'s training, its longest stage), schemes other than offline, and
# an ONNX teacher (logits only).
FEATURE_LOSS, LOGITS_LOSS = ("kd", "sp"), ("kd",)


def default_loss(config: FitConfig, train_images: int) -> tuple[str, ...]:
    """The loss when the config names none: FEATURE_LOSS, or LOGITS_LOSS for small data, a scheme
    other than offline or an ONNX teacher."""
    offline = config.distillation.scheme == "offline"
    if offline and not _is_onnx(config.teacher) and not is_small_data(train_images):
        return FEATURE_LOSS
    return LOGITS_LOSS


def with_loss(config: FitConfig, train_images: int) -> FitConfig:
    """`config` with its loss decided (`default_loss`) when it names none, logged when it reads the
    teacher's maps."""
    if config.distillation.loss is not None:
        return config
    loss = default_loss(config, train_images)
    if loss == FEATURE_LOSS:
        log.info(
            "loss kd + sp: similarity-preserving KD beside Hinton KD distilled 0.9-2.4 points better than "
            "KD alone; the teacher runs on every batch for its feature maps; --loss kd distils from its "
            "cached logits alone"
        )
    return config.with_options(loss=loss)


def make_distill_plan(config: FitConfig, targets) -> DistillPlan:
    """The distillation plan for `targets`: when one of them ships int8, the student trains
    quantization-aware by default (the float student serves the others)."""
    from edgekd.distill.stage import DistillPlan

    int8 = any(t.default_precision == "int8" for t in targets)
    distillation = config.distillation
    if distillation.qat_epochs and not int8:
        ships = ", ".join(f"{t.name} ships {t.default_precision}" for t in targets)
        raise ConfigError(
            f"--qat-epochs {distillation.qat_epochs}: quantization-aware training is for int8 targets, and "
            f"{ships}; drop --qat-epochs or pick an int8 target."
        )
    # A setting left None (alpha) takes the plan's own default.
    given = {name: value for name, value in handed_on(distillation, DistillPlan).items() if value is not None}
    qat_epochs = distillation.qat_epochs if distillation.qat_epochs is not None else (2 if int8 else 0)
    plan = dataclasses.replace(DistillPlan(), **{**given, "qat_epochs": qat_epochs})
    # The quantization-aware epochs distil with kd whatever the loss, so there --alpha always applies.
    kd_term = plan.qat_epochs or any(hasattr(t, "alpha") for t in plan.losses().terms)
    if distillation.alpha is not None and not kd_term:
        raise ConfigError(
            f"--alpha {distillation.alpha:g} weighs the kd term, and --loss {' '.join(plan.loss)} has none; "
            "add --loss kd or drop --alpha."
        )
    return plan


def handed_on(group: Any, to: type) -> dict[str, Any]:
    """The fields of `group` (a settings group of `FitConfig`) that the dataclass `to` has too, by name:
    a group hands them on as they are, so a setting is named once, not copied field by field."""
    names = {f.name for f in dataclasses.fields(to)}
    return {f.name: getattr(group, f.name) for f in dataclasses.fields(group) if f.name in names}


def default_batch_size(train_images: int, epochs: int) -> int:
    """The batch when the user names none: the largest of BATCH_SIZES that still gives `epochs` of
    `train_images` MIN_TRAINING_STEPS optimizer steps, else the smallest. Small data at batch 64 gives a
    student too few steps to learn anything in a short recipe: on 1,000 EuroSAT images at 64 px,
    mobilenetv3_small_050 reached 63.5 % at batch 64 and 68.8 % at batch 16 (15 epochs, lr 0.025)."""
    return next(
        (b for b in BATCH_SIZES if training_steps(train_images, epochs, b) >= MIN_TRAINING_STEPS),
        BATCH_SIZES[-1],
    )


def training_steps(train_images: int, epochs: int, batch_size: int) -> int:
    """Optimizer steps of `epochs` over `train_images` (the last batch of an epoch may be short)."""
    return epochs * math.ceil(train_images / batch_size)


def default_epochs(train_images: int) -> int:
    """The epochs when the user names none: DEFAULT_EPOCHS, or on small data (`is_small_data`) enough
    to show SMALL_DATA_MIN_IMAGES_SEEN images, whichever is more. What a small data set lacks is
    training, not epochs: the search's full trainings and the final training then see as many images
    whatever the split's size."""
    if not is_small_data(train_images):
        return DEFAULT_EPOCHS
    return max(DEFAULT_EPOCHS, math.ceil(SMALL_DATA_MIN_IMAGES_SEEN / train_images))


def is_small_data(train_images: int) -> bool:
    """Fewer training images than SMALL_DATA_IMAGES: the data sets whose default recipe differs (a
    minimum of images seen, the weight average, a search that trains its candidates in full)."""
    return train_images < SMALL_DATA_IMAGES


def confirms_in_full(config: FitConfig, train_images: int, plan: DistillPlan) -> bool:
    """Whether the search decides the retention objective on full trainings (`edgekd.search.confirm`)
    instead of successive halving: on small data (`is_small_data`, gated on the training split's size:
    there one final training costs about what the halving search does), for the offline scheme (a
    confirmation is the final student; the other schemes train a peer, an assistant or generations
    around it), without --time-budget (whose split between search and final training is halving's)
    and with trials allowed (--search-budget 0 chooses without training)."""
    from edgekd.search.halving import parse_budget

    return (
        config.objective == "retention"
        and is_small_data(train_images)
        and plan.scheme == "offline"
        and config.time_budget is None
        and parse_budget(config.search_budget).trials != 0
    )


def final_train_config(config: FitConfig, trial_config, train_images: int):
    """The final distillation's recipe: the search trials' (`trial_config`, a `TrainConfig`) with, on
    small data and when --ema-decay names none, the SMALL_DATA_EMA_DECAY weight average. The trials
    keep the last weights: an average of their few hundred steps lags the network they score (on
    digits it stayed at chance for three epochs where the weights reached 78 %). `--ema-decay 0`
    keeps the last weights here too."""
    decay = config.training.ema_decay
    if decay is None and is_small_data(train_images):
        decay = SMALL_DATA_EMA_DECAY
        log.info(
            "final training: an exponential moving average of the weights (decay %g, ramped up over its "
            "first updates) is shipped: "
            "%d training images are small data (fewer than %d); --ema-decay 0 keeps the last weights",
            decay,
            train_images,
            SMALL_DATA_IMAGES,
        )
    return dataclasses.replace(trial_config, ema_decay=decay or None)


def with_batch_size(config: FitConfig, train_images: int) -> FitConfig:
    """`config` with its batch decided (`default_batch_size` when it names none) for its epochs, logged
    when it is not the largest."""
    if config.training.batch_size is not None:
        return config
    epochs = config.training.epochs
    batch = default_batch_size(train_images, epochs)
    if batch != BATCH_SIZES[0]:
        log.info(
            "batch size %d: %d epochs of %d training images are %s optimizer steps at batch %d, fewer than "
            "the %s a short training needs; --batch-size N sets it",
            batch,
            epochs,
            train_images,
            f"{training_steps(train_images, epochs, BATCH_SIZES[0]):,}",
            BATCH_SIZES[0],
            f"{MIN_TRAINING_STEPS:,}",
        )
    return config.with_options(batch_size=batch)


def with_epochs(config: FitConfig, train_images: int) -> FitConfig:
    """`config` with its epochs decided (`default_epochs`) when it names none, logged when small data
    raise them."""
    if config.training.epochs is not None:
        return config
    epochs = default_epochs(train_images)
    if epochs != DEFAULT_EPOCHS:
        log.info(
            "epochs %d: %d training images are small data (fewer than %d), trained until the student has "
            "seen at least %s images; --epochs N sets them",
            epochs,
            train_images,
            SMALL_DATA_IMAGES,
            f"{SMALL_DATA_MIN_IMAGES_SEEN:,}",
        )
    return config.with_options(epochs=epochs)


def with_data_defaults(config: FitConfig, train_images: int) -> FitConfig:
    """`config` with what the training split's size decides where it names none: the loss
    (`with_loss`), the epochs (`with_epochs`), then the batch for them (`with_batch_size`)."""
    return with_batch_size(with_epochs(with_loss(config, train_images), train_images), train_images)


def make_train_config(config: FitConfig, input_size: int, views=None, *, train_images: int | None = None):
    """The training recipe of `config`; `views` (an `edgekd.augment.ViewDecision`) is the flip and
    shift decision where `config` leaves them open (without one: no flips, the default shift). A
    config that names no batch size or no epochs needs `train_images` to decide them
    (`default_batch_size`, `default_epochs`)."""
    from edgekd.augment import Augmentation
    from edgekd.distill.trainer import TrainConfig, default_lr

    training = config.training
    augmentation = None
    shift = training.augment_shift
    if shift is None:
        shift = views.max_shift if views is not None else default_shift(input_size)
    hflip = training.hflip if training.hflip is not None else bool(views and views.hflip)
    # Views that neither shift nor flip are the images themselves: no augmentation to replay.
    if training.augment_draws and (shift or hflip):
        augmentation = Augmentation(
            draws=training.augment_draws, max_shift=shift, hflip=hflip, seed=training.seed
        )
    epochs = training.epochs
    if epochs is None:
        if train_images is None:
            raise ValueError("a config without epochs needs train_images to decide them")
        epochs = default_epochs(train_images)
    batch = training.batch_size
    if batch is None:
        if train_images is None:
            raise ValueError("a config without a batch size needs train_images to decide one")
        batch = default_batch_size(train_images, epochs)
    lr = training.lr if training.lr is not None else default_lr(training.optimizer, batch)
    ema_decay = training.ema_decay or None  # --ema-decay 0 is no average, which the trainer calls None
    decided = {
        "epochs": epochs,
        "batch_size": batch,
        "lr": lr,
        "augmentation": augmentation,
        "ema_decay": ema_decay,
    }
    return TrainConfig(**{**handed_on(training, TrainConfig), **decided})


def _is_onnx(teacher: str | None) -> bool:
    return teacher is not None and teacher.lower().endswith(".onnx")


def check_teacher_fits_plan(config: FitConfig, plan: DistillPlan) -> None:
    """An ONNX teacher gives logits only and cannot be trained: refuse, before anything runs, the
    losses and schemes that need more of it."""
    loss = plan.losses()
    if not _is_onnx(config.teacher):
        return
    if loss.needs_features or loss.needs_embedding:
        needing = [t.name for t in loss.terms if t.needs_features or t.needs_embedding]
        raise ConfigError(
            f"--loss {', '.join(needing)} reads the teacher's feature maps or embeddings, but the ONNX "
            f"teacher {config.teacher} gives logits only; use a loss on logits (kd, dkd, dist, "
            "logit_mse, ce) or a timm teacher."
        )
    if plan.scheme == "online":
        raise ConfigError(
            f"--scheme online trains the teacher too, but the ONNX teacher {config.teacher} is frozen; "
            "use --scheme offline, born-again or assistant."
        )


def check_models(config: FitConfig, plan: DistillPlan) -> None:
    """The teacher and assistant named exist (a file, or a timm architecture), checked before a run
    directory exists; loading or training them comes later."""
    import timm

    from edgekd._registry import did_you_mean
    from edgekd.errors import TeacherError

    assistant = config.distillation.assistant
    if plan.scheme != "assistant" and assistant is not None:
        raise ConfigError(f"--assistant {assistant} needs --scheme assistant.")
    if plan.scheme == "assistant" and assistant is None and _is_onnx(config.teacher):
        raise ConfigError("an ONNX teacher has no known MACs: name the assistant with --assistant ARCH.")
    if config.teacher is not None:
        as_path = Path(config.teacher)
        if as_path.suffix.lower() in (".onnx", ".safetensors", ".pt", ".pth") and not as_path.is_file():
            raise TeacherError(f"--teacher {as_path}: no such file.")
        if not as_path.exists() and not timm.is_model(config.teacher):
            raise TeacherError(
                f"--teacher {config.teacher!r} is neither a file nor a timm model."
                f"{did_you_mean(config.teacher, timm.list_models())}"
            )
    if config.teacher_weights is not None and not Path(config.teacher_weights).is_file():
        raise TeacherError(f"--teacher-weights {config.teacher_weights}: no such file.")
    if assistant is not None and not timm.is_model(assistant):
        raise TeacherError(
            f"--assistant {assistant!r} is not a timm model.{did_you_mean(assistant, timm.list_models())}"
        )


def teacher_cost(model, input_size: int) -> tuple[int, int | None]:
    """(params, MACs) of the teacher; an ONNX teacher cannot be traced, so its MACs are unknown."""
    from edgekd.analysis import analyze

    if hasattr(model, "parameter_count"):  # edgekd.onnx_teacher.OnnxTeacher
        return model.parameter_count, None
    cost = analyze(model, input_size)
    return cost.params, cost.macs


def assistant_factory(
    config: FitConfig, plan, assessments, chosen, teacher_macs: int | None, num_classes: int
):
    """A factory for the teacher assistant, or None when the scheme needs none; without --assistant,
    `edgekd.search.choose_assistant` picks one from the catalog."""
    if plan.scheme != "assistant":  # --assistant without it was refused by check_models
        return None
    from edgekd.catalog import build_model

    if config.distillation.assistant is not None:
        arch, kwargs = config.distillation.assistant, {}
    else:
        if teacher_macs is None:
            raise ConfigError("an ONNX teacher has no known MACs: name the assistant with --assistant ARCH.")
        from edgekd.search import choose_assistant

        pick = choose_assistant(assessments, chosen, teacher_macs)
        arch, kwargs = pick.candidate.arch, dict(pick.candidate.kwargs)
        log.info("teacher assistant: %s (%s MACs)", arch, f"{pick.macs:,}")

    def make_assistant():
        import torch

        torch.manual_seed(config.training.seed + 1)
        return build_model(arch, num_classes, **kwargs)

    return make_assistant


def view_decision(config: FitConfig, teacher, data):
    """The student's flips and shifts (`edgekd.augment.decide_views`): `--hflip/--no-hflip` and
    `--augment-shift` decide when given; otherwise the teacher's accuracy on those views of the
    validation images does. Logged once."""
    from edgekd.augment import decide_views

    decision = decide_views(
        teacher,
        data.val,
        hflip=config.training.hflip,
        max_shift=config.training.augment_shift,
        default_shift=default_shift(data.input_size) if config.training.augment_draws else 0,
    )
    log.info("training views: %s", decision.why)
    return decision


def default_shift(input_size: int) -> int:
    """Pixels of random translation when the user names none: an eighth of the input."""
    return max(1, input_size // 8)
