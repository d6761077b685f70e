"""`FitConfig`: everything `edgekd fit` is told, checked when it is built, and the rule for what a
resumed run may change. Its own fields are the fit's (target, teacher, search, shipping); two groups
nest inside it, `training` (`TrainingSettings`, how the student trains) and `distillation`
(`DistillSettings`, how the teacher teaches). Every field's name, in whichever group, is one option
name of the CLI (`epochs` is `--epochs`) and a key of a flat config.yaml; `OPTION_GROUPS` says which
group holds it. config.yaml is written nested (`training:`, `distillation:`) and read in either form.

Example:
    >>> config = FitConfig.from_options(target=("pi5", "pi4"), epochs=3)
    >>> config.targets, config.training.epochs, config.option("epochs")
    (('pi5', 'pi4'), 3, 3)
    >>> FitConfig.from_options(epochs=0)
    Traceback (most recent call last):
    ...
    edgekd.errors.ConfigError: epochs must be at least 1, got 0 (--epochs).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekd._config import check_directory, from_mapping, load_yaml, to_mapping
from edgekd._io import write_text_atomic
from edgekd.errors import ConfigError
from edgekd.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """How the student trains. The fields that `edgekd.distill.trainer.TrainConfig` also has are handed
    on by name (`fit_recipe.make_train_config`); `batch_size` and `lr` left None are decided there from
    the data, and the augmented views become the trainer's `Augmentation`."""

    # default: fit_recipe.DEFAULT_EPOCHS (15), more on small data (fit_recipe.default_epochs)
    epochs: int | None = None
    batch_size: int | None = None  # default: 64, or less on small data (fit_recipe.default_batch_size)
    # the peak learning rate; default: scaled by batch size (edgekd.distill.trainer.default_lr)
    lr: float | None = None
    weight_decay: float = 0.0005
    optimizer: str = "sgd"  # SGD with Nesterov momentum 0.9; "adamw"
    schedule: str = "onecycle"
    # the final training's weight average; default: fit_recipe.SMALL_DATA_EMA_DECAY on small data, else
    # none; 0: none
    ema_decay: float | None = None
    clip_grad_norm: float | None = None
    bf16: bool = False
    # where the teacher, the search's trials, the student and QAT train (edgekd.distill.accelerator):
    # auto takes CUDA, then MPS, then the CPU; export, parity and latency run on the CPU regardless
    accelerator: str = "auto"
    sync_batchnorm: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch
    # the run's seed: the student's training and views, and also the teacher's training, the
    # assistant's initial weights and the int8 calibration sample
    seed: int = 0
    augment_draws: int = 4  # distinct augmented views of each image, cycled over the epochs; 0: none
    # pixels of random translation; default: an eighth of the input when the teacher answers the
    # shifted views right (fit_recipe.view_decision), else 0
    augment_shift: int | None = None
    # random horizontal flips; default: on when the teacher's classes survive mirroring
    # (fit_recipe.view_decision)
    hflip: bool | None = None
    # Streamed data only (edgekd.streaming): timm's RandAugment ("rand-m9-mstd0.5") on each training
    # view, and the Beta alphas of timm's batch mixup and cutmix (0: off)
    rand_augment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self) -> None:
        _validate_training(self)


@dataclass(frozen=True)
class DistillSettings:
    """How the teacher teaches. The fields that `edgekd.distill.stage.DistillPlan` also has are handed on
    by name (`fit_recipe.make_distill_plan`); `alpha` and `qat_epochs` left None take the plan's
    default and the targets' (int8 or not) there."""

    # "name[:weight]" terms of a weighted sum (edgekd.distill.losses); None: the data decide
    # (`fit_recipe.default_loss`: kd + sp, or kd alone).
    loss: tuple[str, ...] | None = None
    temperature: float = 4.0
    alpha: float | None = None  # kd's weight on the teacher; default 0.9 (edgekd.distill.stage.DistillPlan)
    label_smoothing: float = 0.0
    scheme: str = "offline"  # offline, online, born-again, assistant (edgekd.distill.stage)
    assistant: str | None = None  # the teacher assistant's architecture; default: picked from the catalog
    teacher_cache: bool = True  # offline: the teacher's outputs computed once per augmented view
    qat_epochs: int | None = None  # int8 targets: quantization-aware epochs (default 2); others: none

    def __post_init__(self) -> None:
        if self.loss is not None:  # a list from Python compares unequal
            object.__setattr__(self, "loss", tuple(self.loss))
        _validate_distillation(self)


@dataclass(frozen=True)
class FitConfig:
    """Everything `edgekd fit` needs: the fit's own settings, and the `training` and `distillation`
    groups. Build one from the CLI's flat option names with `FitConfig.from_options`."""

    target: str | tuple[str, ...] = "pi5"  # several: one student that fits all, exported for each
    teacher: str | None = None
    teacher_weights: Path | None = None
    teacher_epochs: int | None = None  # when edgekd trains or fine-tunes the teacher
    data: Path | None = None
    # decode: every image decoded once into the cache; stream: decoded per sample by DataLoader
    # workers; auto: decode when the decoded images fit the cache budget (edgekd.streaming)
    data_mode: str = "auto"
    input_size: int | None = None
    student: str | None = None
    search_budget: str = "4"  # trials (first-rung candidates), wall clock (20m), 0 (no trials) or all
    # What the search chooses for (edgekd.search.select): retention (the fastest student that keeps
    # min_retention of the best trial accuracy), accuracy (the most accurate) or latency (the fastest
    # clearly above chance).
    objective: str = "retention"
    min_retention: float = 0.97
    # The full trial budget the search's rungs are sized from (successive halving's lone winner would
    # train this long; the final training is that run, so the deciding rung gets a third of it).
    search_epochs: int | None = None  # default: half of `epochs`
    search_images: int | None = None  # default: all of the training images
    # wall clock for the whole fit (20m, 1.5h), split between search and final training by their
    # measured cost (edgekd.training_time); None: no limit
    time_budget: str | None = None
    baseline: str | None = None  # "scratch": also train the student without the teacher, for the report
    threads: int = 1
    device: str | None = None  # profile the exported student there at the end (edgekd.devices.registry)
    runs_dir: Path = Path("runs")
    cache_dir: Path | None = None
    targets_dir: tuple[Path, ...] = ()  # directories of the user's own target YAML files
    training: TrainingSettings = field(default_factory=TrainingSettings)
    distillation: DistillSettings = field(default_factory=DistillSettings)

    def __post_init__(self) -> None:
        names = (self.target,) if isinstance(self.target, str) else tuple(self.target)
        if not names:
            raise ConfigError("target: name at least one target")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"target: {', '.join(twice)} named twice")
        # One target stays a plain name, so a one-target config.yaml reads `target: pi5`.
        object.__setattr__(self, "target", names[0] if len(names) == 1 else names)
        _validate(self)

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,) if isinstance(self.target, str) else self.target

    @classmethod
    def from_options(cls, **options: Any) -> FitConfig:
        """The config of `options` by their flat names (`epochs`, `loss`, `device`), as the CLI and a
        flat config.yaml name them; the rest stay at their defaults."""
        nested = nest_options(options, "options")
        groups = {name: GROUPS[name](**nested.pop(name)) for name in GROUPS if name in nested}
        return cls(**nested, **groups)

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> FitConfig:
        """config.yaml in either form, nested or flat; `overrides` by their flat names."""
        data = load_yaml(path) or {}
        if isinstance(data, Mapping):  # anything else: from_mapping says what it must be
            data = nest_options(data, str(path))
        return from_mapping(cls, data, str(path)).with_options(**overrides)

    def option(self, name: str) -> Any:
        """The value of the option `name` (a flat name: `epochs`, not `training.epochs`)."""
        group = OPTION_GROUPS[name]
        return getattr(self if group is None else getattr(self, group), name)

    def with_options(self, **options: Any) -> FitConfig:
        """This config with `options` (by their flat names) changed, checked as a new one would be."""
        nested = nest_options(options, "options")
        groups = {
            name: dataclasses.replace(getattr(self, name), **nested.pop(name))
            for name in GROUPS
            if name in nested
        }
        return dataclasses.replace(self, **nested, **groups) if nested or groups else self


GROUPS: dict[str, type] = {"training": TrainingSettings, "distillation": DistillSettings}


def _option_groups() -> dict[str, str | None]:
    """Every option name -> the group that holds it (None: FitConfig itself). The CLI and a flat
    config.yaml name an option without its group, so a name may be a field of one group only."""
    table: dict[str, str | None] = {}
    for group, cls in ((None, FitConfig), *GROUPS.items()):
        for f in dataclasses.fields(cls):
            if f.name in GROUPS:
                continue
            if f.name in table:
                raise TypeError(
                    f"edgekd bug: option {f.name} is a field of {table[f.name] or 'FitConfig'} and of {group}"
                )
            table[f.name] = group
    return table


OPTION_GROUPS = _option_groups()


def nest_options(options: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`options` in FitConfig's shape: the fit's own options as they are, each group's options (flat,
    as the CLI and config.yaml before the groups name them, or already in the group's section) in its
    section. An unknown name, or an option given both flat and in its section, is refused naming
    `source`."""
    from edgekd._registry import did_you_mean

    names = [*OPTION_GROUPS, *GROUPS]
    for key in options:
        if key not in names:
            raise ConfigError(f"{source}: unknown field {key!r}.{did_you_mean(str(key), names)}")
    nested = {
        key: value for key, value in options.items() if key not in GROUPS and OPTION_GROUPS[key] is None
    }
    for group in GROUPS:
        section = options.get(group)
        flat = {key: value for key, value in options.items() if OPTION_GROUPS.get(key) == group}
        if not isinstance(section, Mapping):
            if section is not None:
                nested[group] = section  # from_mapping says what it must be
                continue
            section = {}
        twice = sorted(set(section) & set(flat))
        if twice:
            raise ConfigError(f"{source}: {', '.join(twice)} given both under {group}: and at the top level.")
        if section or flat or group in options:
            nested[group] = {**section, **flat}
    return nested


# Input sizes fit accepts. Below 8 px a stride-32 network's last feature map is empty padding; above
# 1024 px one batch of 64 fp32 images is 800 MB before the first activation, and no target's runtime
# (every shipped target takes 96-256 px) is built for it.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024
# The smallest input size fit picks by itself: a stride-32 student's last feature map is one pixel at
# 32 px, so smaller images (digits' 8 px) are upscaled to it; --input-size may still go down to 8.
MIN_DEFAULT_INPUT_SIZE = 32
# `scratch`: the chosen student trained on the same recipe with labels only, so the report shows what
# the teacher bought. None: no baseline (it costs as much as the distillation).
BASELINES = (None, "scratch")
# Options that only change the stages after training (parity, latency, the device profile), or where
# training runs but not what it computes, so a resumed run may take new values (a run started on a
# GPU can finish on the CPU); every other option is the run's and stays as its config.yaml says.
RESUMABLE_OPTIONS = ("device", "threads", "accelerator")


def decide_input_size(requested: int | None, native: int, targets) -> tuple[int, str]:
    """The input size a fit trains and ships at, and one line saying why. `requested` (--input-size)
    always wins. Without it: the data's `native` size (the longer side of the most common image), at
    least MIN_DEFAULT_INPUT_SIZE, as long as it is at most the largest size every target allows
    (`Target.allowed_input_sizes`); larger data is brought down to the largest size all the targets
    share, with the cost factor that avoids. A native size between a target's listed sizes (64 px on
    pi5, whose list is 96-224) is kept: the list is the resolutions the target is known to run well,
    which `edgekd search` explores, and fit has always trained at any size up to them on request."""
    if requested is not None:
        return requested, f"input size {requested} px: --input-size (the images are {native} px)"
    largest = min(max(t.allowed_input_sizes) for t in targets)
    names = targets[0].name if len(targets) == 1 else ", ".join(t.name for t in targets[:-1])
    allow = f"{names} allows" if len(targets) == 1 else f"{names} and {targets[-1].name} allow"
    if native < MIN_DEFAULT_INPUT_SIZE:
        factor = (MIN_DEFAULT_INPUT_SIZE / native) ** 2
        return MIN_DEFAULT_INPUT_SIZE, (
            f"input size {MIN_DEFAULT_INPUT_SIZE} px: the images are {native} px, upscaled to the smallest "
            f"size fit picks ({factor:.0f}x their pixels; --input-size chooses another)"
        )
    if native <= largest:
        return native, f"input size {native} px: the images' native size ({allow} up to {largest} px)"
    shared = set.intersection(*(set(t.allowed_input_sizes) for t in targets))
    size = max((s for s in shared if s <= largest), default=largest)
    factor = (native / size) ** 2
    return size, (
        f"input size {size} px, the largest {allow}: the images are {native} px, and training at "
        f"{native} px would cost {factor:.1f}x the pixels (--input-size {native} to do so anyway)"
    )


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bad(settings: Any, name: str, rule: str) -> ConfigError:
    return ConfigError(f"{name} ({_option(name)}) {rule}, got {getattr(settings, name)!r}.")


def _check_counts(settings: Any, at_least_one: tuple[str, ...], at_least_zero: tuple[str, ...]) -> None:
    for name in at_least_one:
        if getattr(settings, name) is not None and getattr(settings, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(settings, name)} ({_option(name)}).")
    for name in at_least_zero:
        if (getattr(settings, name) or 0) < 0:
            raise _bad(settings, name, "must be 0 or more")


def _validate_training(training: TrainingSettings) -> None:
    """Every option's range is checked where its settings are built (from the CLI or a YAML file), so a
    bad value fails before a run directory exists or anything trains; the ConfigError names the option."""
    from edgekd._registry import did_you_mean
    from edgekd.distill.accelerator import check_accelerator_name
    from edgekd.distill.trainer import OPTIMIZERS, SCHEDULES

    _check_counts(training, ("epochs", "batch_size"), ("augment_draws", "augment_shift", "seed"))
    if training.lr is not None and not (math.isfinite(training.lr) and training.lr > 0):
        raise _bad(training, "lr", "must be a finite number above 0 (e.g. 0.025)")
    if not (math.isfinite(training.weight_decay) and training.weight_decay >= 0):
        raise _bad(training, "weight_decay", "must be a finite number, 0 or more")
    if training.ema_decay is not None and not 0 <= training.ema_decay < 1:
        raise _bad(training, "ema_decay", "must be at least 0 and below 1 (0: no average; e.g. 0.999)")
    if training.clip_grad_norm is not None and not (
        math.isfinite(training.clip_grad_norm) and training.clip_grad_norm > 0
    ):
        raise _bad(training, "clip_grad_norm", "must be a finite number above 0")
    check_accelerator_name(training.accelerator)
    for name in ("mixup", "cutmix"):
        if not (math.isfinite(getattr(training, name)) and getattr(training, name) >= 0):
            raise _bad(training, name, "must be a finite number, 0 (off) or more (a Beta alpha, e.g. 0.2)")
    if training.rand_augment is not None:
        _check_rand_augment(training.rand_augment)
    for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        value = getattr(training, name)
        if value not in choices:
            hint = did_you_mean(value, list(choices))
            raise ConfigError(f"unknown {name} {value!r} ({_option(name)}).{hint}")


def _check_rand_augment(config: str) -> None:
    """A RandAugment config timm parses ("rand-m9-mstd0.5"), checked by timm itself."""
    from timm.data.auto_augment import rand_augment_transform

    try:
        if not config.startswith("rand"):
            raise ValueError("not a RandAugment config")
        rand_augment_transform(config, {})
    except (ValueError, AssertionError, KeyError) as e:
        raise ConfigError(
            f"rand_augment (--rand-augment) {config!r} is not a timm RandAugment config such as "
            f"rand-m9-mstd0.5 ({e})."
        ) from e


def _validate_distillation(distillation: DistillSettings) -> None:
    """As `_validate_training`, for the distillation options."""
    _check_counts(distillation, (), ("qat_epochs",))
    if not (math.isfinite(distillation.temperature) and distillation.temperature > 0):
        raise _bad(distillation, "temperature", "must be a finite number above 0 (e.g. 4)")
    if distillation.alpha is not None and not 0 <= distillation.alpha <= 1:  # also refuses nan
        raise _bad(distillation, "alpha", "must be between 0 and 1")
    if not 0 <= distillation.label_smoothing < 1:
        raise _bad(
            distillation,
            "label_smoothing",
            "may not be 1 (no label would be left) and must be between 0 and 1",
        )


def _validate(config: FitConfig) -> None:
    """As `_validate_training`, for the fit's own options; its groups checked theirs when built."""
    from edgekd.search.halving import parse_budget
    from edgekd.search.select import check_objective

    _check_counts(config, ("threads", "search_epochs", "search_images", "teacher_epochs"), ())
    if config.input_size is not None and not MIN_INPUT_SIZE <= config.input_size <= MAX_INPUT_SIZE:
        raise _bad(config, "input_size", f"must be between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE} pixels")
    parse_budget(config.search_budget)
    check_objective(config.objective, config.min_retention)
    if config.time_budget is not None:
        from edgekd.training_time import parse_duration

        parse_duration(config.time_budget)
    from edgekd.streaming import DATA_MODES

    if config.data_mode not in DATA_MODES:
        raise ConfigError(
            f"unknown data_mode {config.data_mode!r} (--data-mode): one of {', '.join(DATA_MODES)}."
        )
    if config.data_mode == "decode" and fresh_view_options(config.training):
        raise ConfigError(
            f"{fresh_view_options(config.training)} needs fresh random views of each batch, which "
            "--data-mode decode does not make: use --data-mode stream (or auto)."
        )
    if config.baseline not in BASELINES:
        raise ConfigError(f"unknown baseline {config.baseline!r} (--baseline): the one baseline is scratch.")
    if config.teacher_weights is not None and config.teacher is None:
        raise ConfigError(
            "teacher_weights needs teacher (the timm architecture those weights are for): add --teacher ARCH."
        )
    for name in ("runs_dir", "cache_dir"):
        if getattr(config, name) is not None:
            check_directory(f"{name} ({_option(name)})", Path(getattr(config, name)))


def fresh_view_options(training: TrainingSettings) -> str | None:
    """The options set that only streamed data can honour (`--rand-augment, --mixup`), or None."""
    named = [_option(n) for n in ("rand_augment", "mixup", "cutmix") if getattr(training, n)]
    return ", ".join(named) or None


def resume_config(run: Path, changes: dict[str, Any]) -> FitConfig:
    """The config of the run directory `run`, with `changes` (option name -> value) applied where they
    are safe to change on a resume (`RESUMABLE_OPTIONS`: written back to the run's config.yaml). An
    option that differs from the run's own value and would change training is refused, all in one
    error; one given with the run's own value is accepted. Nothing is ignored."""
    saved_path = RunDir(Path(run)).config
    if not Path(run).is_dir() or not saved_path.is_file():
        raise ConfigError(
            f"{run}: not an edgekd run directory (no config.yaml); --resume takes a run directory."
        )
    saved = FitConfig.from_yaml(saved_path)
    wanted = saved.with_options(**changes)  # a bad value fails here, as it would on a new run
    differing = [name for name in changes if wanted.option(name) != saved.option(name)]
    refused = [name for name in differing if name not in RESUMABLE_OPTIONS]
    if refused:
        raise ConfigError(
            f"--resume keeps the run's training settings; drop {_in_words_or(tuple(map(_option, refused)))} "
            f"or start a new run (options a resume may change: "
            f"{', '.join(map(_option, RESUMABLE_OPTIONS))})."
        )
    if differing:
        for name in differing:
            old, new = saved.option(name), wanted.option(name)
            log.info("resume: %s %s replaces %s in %s", _option(name), new, old, saved_path)
        write_text_atomic(saved_path, yaml.safe_dump(to_mapping(wanted), sort_keys=False))
    return wanted


def _in_words_or(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
