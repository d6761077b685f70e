"""`FitConfig`: everything `edgekd fit` is told, checked when it is built, and the rule for what a
resumed run may change. Field names equal the CLI's option names and config.yaml's keys.

Example:
    >>> FitConfig(target=("pi5", "pi4"), epochs=3).targets
    ('pi5', 'pi4')
    >>> FitConfig(epochs=0)
    Traceback (most recent call last):
    ...
    edgekd.errors.ConfigError: epochs must be at least 1, got 0 (--epochs).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgekd._config import check_directory, from_mapping, load_yaml, to_mapping
from edgekd._io import write_text_atomic
from edgekd.errors import ConfigError
from edgekd.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """Everything `edgekd fit` needs. Field names equal the CLI's option names and config.yaml's keys."""

    target: str | tuple[str, ...] = "pi5"  # several: one student that fits all, exported for each
    teacher: str | None = None
    teacher_weights: Path | None = None
    data: Path | None = None
    input_size: int | None = None
    student: str | None = None
    epochs: int = 15
    batch_size: int | None = None  # default: 64, or less on small data (default_batch_size)
    # the peak learning rate; default: scaled by batch size (edgekd.distill.trainer.default_lr)
    lr: float | None = None
    weight_decay: float = 0.0005
    # "name[:weight]" terms of a weighted sum (edgekd.distill.losses). Hinton KD: in benchmarks/recipe.py
    # (EuroSAT 32 px) DIST, CE + 2·DIST at τ = 4, matched it without flips and, with them, spiked at the
    # schedule's peak learning rate (its loss is ~10x kd's) and ended 6.9 points lower.
    loss: tuple[str, ...] = ("kd",)
    temperature: float = 4.0
    alpha: float | None = None  # kd's weight on the teacher; default 0.9 (edgekd.distill.stage.DistillPlan)
    label_smoothing: float = 0.0
    scheme: str = "offline"  # offline, online, born-again, assistant (edgekd.distill.stage)
    assistant: str | None = None  # the teacher assistant's architecture; default: picked from the catalog
    search_budget: str = "4"  # trials (first-rung candidates), wall clock (20m), 0 (no trials) or all
    # What the search chooses for (edgekd.search.select): retention (the fastest student that keeps
    # min_retention of the best trial accuracy), accuracy (the most accurate) or latency (the fastest
    # clearly above chance).
    objective: str = "retention"
    min_retention: float = 0.97
    # The full trial budget the search's rungs are sized from (successive halving's lone winner would
    # train this long; the final training is that run, so the deciding rung gets a third of it).
    search_epochs: int | None = None  # default: a fifth of `epochs`
    search_images: int | None = None  # default: all of the training images
    # wall clock for the whole fit (20m, 1.5h), split between search and final training by their
    # measured cost (edgekd.training_time); None: no limit
    time_budget: str | None = None
    teacher_cache: bool = True  # offline: the teacher's outputs computed once per augmented view
    augment_draws: int = 4  # distinct augmented views of each image, cycled over the epochs; 0: none
    # pixels of random translation; default: an eighth of the input when the teacher answers the
    # shifted views right (fit_recipe.view_decision), else 0
    augment_shift: int | None = None
    # random horizontal flips; default: on when the teacher's classes survive mirroring
    # (fit_recipe.view_decision)
    hflip: bool | None = None
    optimizer: str = "sgd"  # SGD with Nesterov momentum 0.9; "adamw"
    schedule: str = "onecycle"
    ema_decay: float | None = None
    clip_grad_norm: float | None = None
    bf16: bool = False
    baseline: str | None = None  # "scratch": also train the student without the teacher, for the report
    qat_epochs: int | None = None  # int8 targets: quantization-aware epochs (default 2); others: none
    teacher_epochs: int | None = None
    seed: int = 0
    threads: int = 1
    device: str | None = None  # profile the exported student there at the end (edgekd.devices.registry)
    runs_dir: Path = Path("runs")
    cache_dir: Path | None = None
    targets_dir: tuple[Path, ...] = ()  # directories of the user's own target YAML files

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
    def from_yaml(cls, path: Path, **overrides: Any) -> FitConfig:
        config = from_mapping(cls, load_yaml(path) or {}, str(path))
        return dataclasses.replace(config, **overrides)


# Input sizes fit accepts. Below 8 px a stride-32 network's last feature map is empty padding; above
# 1024 px one batch of 64 fp32 images is 800 MB before the first activation, and no target's runtime
# (every shipped target takes 96-256 px) is built for it.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024
# `scratch`: the chosen student trained on the same recipe with labels only, so the report shows what
# the teacher bought. None: no baseline (it costs as much as the distillation).
BASELINES = (None, "scratch")
# Options that only change the stages after training (parity, latency, the device profile), so a
# resumed run may take new values; every other option is the run's and stays as its config.yaml says.
RESUMABLE_OPTIONS = ("device", "threads")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _validate(config: FitConfig) -> None:
    """Every option's range, checked when the config is built (from the CLI or a YAML file), so a bad
    value fails before a run directory exists or anything trains. Raises ConfigError naming the option."""
    from edgekd._registry import did_you_mean
    from edgekd.distill.trainer import OPTIMIZERS, SCHEDULES
    from edgekd.search.halving import parse_budget
    from edgekd.search.select import check_objective

    def bad(name: str, rule: str) -> ConfigError:
        return ConfigError(f"{name} ({_option(name)}) {rule}, got {getattr(config, name)!r}.")

    for name in ("epochs", "batch_size", "threads"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)} ({_option(name)}).")
    for name in ("search_epochs", "search_images", "teacher_epochs"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)} ({_option(name)}).")
    for name in ("augment_draws", "augment_shift", "qat_epochs", "seed"):
        if (getattr(config, name) or 0) < 0:
            raise bad(name, "must be 0 or more")
    if config.input_size is not None and not MIN_INPUT_SIZE <= config.input_size <= MAX_INPUT_SIZE:
        raise bad("input_size", f"must be between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE} pixels")
    if config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0):
        raise bad("lr", "must be a finite number above 0 (e.g. 0.025)")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise bad("weight_decay", "must be a finite number, 0 or more")
    if not (math.isfinite(config.temperature) and config.temperature > 0):
        raise bad("temperature", "must be a finite number above 0 (e.g. 4)")
    if config.alpha is not None and not 0 <= config.alpha <= 1:  # also refuses nan
        raise bad("alpha", "must be between 0 and 1")
    if not 0 <= config.label_smoothing < 1:
        raise bad("label_smoothing", "may not be 1 (no label would be left) and must be between 0 and 1")
    if config.ema_decay is not None and not 0 < config.ema_decay < 1:
        raise bad("ema_decay", "must be between 0 and 1, both excluded (e.g. 0.999)")
    if config.clip_grad_norm is not None and not (
        math.isfinite(config.clip_grad_norm) and config.clip_grad_norm > 0
    ):
        raise bad("clip_grad_norm", "must be a finite number above 0")
    for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        value = getattr(config, name)
        if value not in choices:
            hint = did_you_mean(value, list(choices))
            raise ConfigError(f"unknown {name} {value!r} ({_option(name)}).{hint}")
    parse_budget(config.search_budget)
    check_objective(config.objective, config.min_retention)
    if config.time_budget is not None:
        from edgekd.training_time import parse_duration

        parse_duration(config.time_budget)
    if config.baseline not in BASELINES:
        raise ConfigError(f"unknown baseline {config.baseline!r} (--baseline): the one baseline is scratch.")
    if config.teacher_weights is not None and config.teacher is None:
        raise ConfigError(
            "teacher_weights needs teacher (the timm architecture those weights are for): add --teacher ARCH."
        )
    for name in ("runs_dir", "cache_dir"):
        if getattr(config, name) is not None:
            check_directory(f"{name} ({_option(name)})", Path(getattr(config, name)))


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
    wanted = dataclasses.replace(saved, **changes)  # a bad value fails here, as it would on a new run
    differing = [name for name in changes if getattr(wanted, name) != getattr(saved, name)]
    refused = [name for name in differing if name not in RESUMABLE_OPTIONS]
    if refused:
        raise ConfigError(
            f"--resume keeps the run's training settings; drop {_in_words_or(tuple(map(_option, refused)))} "
            f"or start a new run (options a resume may change: "
            f"{', '.join(map(_option, RESUMABLE_OPTIONS))})."
        )
    if differing:
        for name in differing:
            old, new = getattr(saved, name), getattr(wanted, name)
            log.info("resume: %s %s replaces %s in %s", _option(name), new, old, saved_path)
        write_text_atomic(saved_path, yaml.safe_dump(to_mapping(wanted), sort_keys=False))
    return wanted


def _in_words_or(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
