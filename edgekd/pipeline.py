"""`fit()`: target → student choice → distillation → export → parity → latency → report, in a run
directory. A stage whose outputs are complete is skipped on re-run, so an interrupted fit resumes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgekd._config import check_directory, from_mapping, load_yaml, to_mapping
from edgekd._io import describe_os_error, write_json_atomic, write_text_atomic
from edgekd.errors import ConfigError, FileSystemError, RunInterrupted
from edgekd.progress import Observer, SilentObserver, StageTracker

if TYPE_CHECKING:
    from edgekd.distill.stage import DistillPlan

log = logging.getLogger(__name__)

# A search rung trains on at least this many images for at least this many optimizer steps (as far as
# the search's epochs allow, which rise on small data to allow it: `search_rungs`): a fresh network
# scores near chance after a few dozen steps, and a rung of chance scores ranks nothing. On digits
# (1,259 images, batch 16) trials of 62-158 steps scored 9-24 % against 10 % chance.
SEARCH_MIN_IMAGES, SEARCH_MIN_STEPS = 1000, 250
# The default batch (default_batch_size): the largest of these that gives an epoch this many steps.
BATCH_SIZES, MIN_STEPS_PER_EPOCH = (64, 32, 16), 50
# Above this teacher/student parameter ratio fit suggests a teacher assistant (Mirzadeh et al. 2020
# see the gap hurt plain KD once it is large; they give no single threshold, and 10x is a round rule
# of thumb for "large", not a figure measured here).
CAPACITY_GAP = 10.0


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
    search_epochs: int | None = None  # epochs of the search's last rung; default: a fifth of `epochs`
    search_images: int | None = None  # training images of the last rung; default: all of them
    # wall clock for the whole fit (20m, 1.5h), split between search and final training by their
    # measured cost (edgekd.training_time); None: no limit
    time_budget: str | None = None
    teacher_cache: bool = True  # offline: the teacher's outputs computed once per augmented view
    augment_draws: int = 4  # distinct augmented views of each image, cycled over the epochs; 0: none
    # pixels of random translation; default: an eighth of the input when the teacher answers the
    # shifted views right (_view_decision), else 0
    augment_shift: int | None = None
    # random horizontal flips; default: on when the teacher's classes survive mirroring (_view_decision)
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
    saved_path = Path(run) / "config.yaml"
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


def _prediction_basis(target) -> str:
    """How the target's latency was predicted, in words: which profile rows calibrated it, or that
    none did (the report shows it beside the figure)."""
    from edgekd.latency import calibrate

    if target.latency_model.estimator == "vela":
        return "Vela's estimate on the int8 TFLite file"
    return calibrate(target).provenance


def _in_words(names: tuple[str, ...]) -> str:
    """The names as a phrase: pi5; pi5 and pi4; pi5, pi4 and android-cpu."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _new_run_dir(config: FitConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{'+'.join(config.targets)}"
    run = config.runs_dir / name
    suffix = 1
    while run.exists():
        suffix += 1
        run = config.runs_dir / f"{name}-{suffix}"
    run.mkdir(parents=True)
    return run


def _distill_plan(config: FitConfig, targets) -> DistillPlan:
    """The distillation plan for `targets`: when one of them ships int8, the student trains
    quantization-aware by default (the float student serves the others)."""
    from edgekd.distill.stage import DistillPlan

    int8 = any(t.default_precision == "int8" for t in targets)
    if config.qat_epochs and not int8:
        ships = ", ".join(f"{t.name} ships {t.default_precision}" for t in targets)
        raise ConfigError(
            f"--qat-epochs {config.qat_epochs}: quantization-aware training is for int8 targets, and "
            f"{ships}; drop --qat-epochs or pick an int8 target."
        )
    qat_epochs = config.qat_epochs if config.qat_epochs is not None else (2 if int8 else 0)
    plan = DistillPlan(
        scheme=config.scheme,
        loss=tuple(config.loss),
        temperature=config.temperature,
        **({} if config.alpha is None else {"alpha": config.alpha}),
        label_smoothing=config.label_smoothing,
        teacher_cache=config.teacher_cache,
        qat_epochs=qat_epochs,
    )
    # The quantization-aware epochs distil with kd whatever the loss, so there --alpha always applies.
    kd_term = plan.qat_epochs or any(hasattr(t, "alpha") for t in plan.losses().terms)
    if config.alpha is not None and not kd_term:
        raise ConfigError(
            f"--alpha {config.alpha:g} weighs the kd term, and --loss {' '.join(plan.loss)} has none; "
            "add --loss kd or drop --alpha."
        )
    return plan


def default_batch_size(train_images: int) -> int:
    """The batch when the user names none: the largest of BATCH_SIZES that still gives an epoch
    MIN_STEPS_PER_EPOCH optimizer steps, else the smallest. A small data set at batch 64 gives a
    student too few steps to learn anything in a short recipe: on 1,000 EuroSAT images at 64 px,
    mobilenetv3_small_050 reached 63.5 % at batch 64 and 68.8 % at batch 16 (15 epochs, lr 0.025)."""
    return next((b for b in BATCH_SIZES if train_images / b >= MIN_STEPS_PER_EPOCH), BATCH_SIZES[-1])


def _with_batch_size(config: FitConfig, train_images: int) -> FitConfig:
    """`config` with its batch decided (`default_batch_size` when it names none), logged once."""
    if config.batch_size is not None:
        return config
    batch = default_batch_size(train_images)
    if batch != BATCH_SIZES[0]:
        log.info(
            "batch size %d: %d training images give %d steps an epoch at %d, fewer than %d",
            batch,
            train_images,
            train_images // BATCH_SIZES[0],
            BATCH_SIZES[0],
            MIN_STEPS_PER_EPOCH,
        )
    return dataclasses.replace(config, batch_size=batch)


def _train_config(config: FitConfig, input_size: int, views=None, *, train_images: int | None = None):
    """The training recipe of `config`; `views` (an `edgekd.augment.ViewDecision`) is the flip and
    shift decision where `config` leaves them open (without one: no flips, the default shift). A
    config that names no batch size needs `train_images` to decide one (`default_batch_size`)."""
    from edgekd.augment import Augmentation
    from edgekd.distill.trainer import TrainConfig, default_lr

    augmentation = None
    shift = config.augment_shift
    if shift is None:
        shift = views.max_shift if views is not None else default_shift(input_size)
    hflip = config.hflip if config.hflip is not None else bool(views and views.hflip)
    # Views that neither shift nor flip are the images themselves: no augmentation to replay.
    if config.augment_draws and (shift or hflip):
        augmentation = Augmentation(
            draws=config.augment_draws, max_shift=shift, hflip=hflip, seed=config.seed
        )
    batch = config.batch_size
    if batch is None:
        if train_images is None:
            raise ValueError("a config without a batch size needs train_images to decide one")
        batch = default_batch_size(train_images)
    return TrainConfig(
        config.epochs,
        batch,
        config.lr if config.lr is not None else default_lr(config.optimizer, batch),
        config.weight_decay,
        config.seed,
        optimizer=config.optimizer,
        schedule=config.schedule,
        ema_decay=config.ema_decay,
        clip_grad_norm=config.clip_grad_norm,
        bf16=config.bf16,
        augmentation=augmentation,
    )


def _is_onnx(teacher: str | None) -> bool:
    return teacher is not None and teacher.lower().endswith(".onnx")


def _check_teacher_fits_plan(config: FitConfig, plan: DistillPlan) -> None:
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


def _check_models(config: FitConfig, plan: DistillPlan) -> None:
    """The teacher and assistant named exist (a file, or a timm architecture), checked before a run
    directory exists; loading or training them comes later."""
    import timm

    from edgekd._registry import did_you_mean
    from edgekd.errors import TeacherError

    if plan.scheme != "assistant" and config.assistant is not None:
        raise ConfigError(f"--assistant {config.assistant} needs --scheme assistant.")
    if plan.scheme == "assistant" and config.assistant is None and _is_onnx(config.teacher):
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
    if config.assistant is not None and not timm.is_model(config.assistant):
        raise TeacherError(
            f"--assistant {config.assistant!r} is not a timm model."
            f"{did_you_mean(config.assistant, timm.list_models())}"
        )


def _teacher_cost(model, input_size: int) -> tuple[int, int | None]:
    """(params, MACs) of the teacher; an ONNX teacher cannot be traced, so its MACs are unknown."""
    from edgekd.analysis import analyze

    if hasattr(model, "parameter_count"):  # edgekd.onnx_teacher.OnnxTeacher
        return model.parameter_count, None
    cost = analyze(model, input_size)
    return cost.params, cost.macs


def _assistant(config: FitConfig, plan, assessments, chosen, teacher_macs: int | None, num_classes: int):
    """A factory for the teacher assistant, or None when the scheme needs none; without --assistant,
    `edgekd.search.choose_assistant` picks one from the catalog."""
    if plan.scheme != "assistant":  # --assistant without it was refused by _check_models
        return None
    from edgekd.catalog import build_model

    if config.assistant is not None:
        arch, kwargs = config.assistant, {}
    else:
        if teacher_macs is None:
            raise ConfigError("an ONNX teacher has no known MACs: name the assistant with --assistant ARCH.")
        from edgekd.search import choose_assistant

        pick = choose_assistant(assessments, chosen, teacher_macs)
        arch, kwargs = pick.candidate.arch, dict(pick.candidate.kwargs)
        log.info("teacher assistant: %s (%s MACs)", arch, f"{pick.macs:,}")

    def make_assistant():
        import torch

        torch.manual_seed(config.seed + 1)
        return build_model(arch, num_classes, **kwargs)

    return make_assistant


def search_rungs(config: FitConfig, epochs: int, train_images: int) -> dict[str, int]:
    """`plan_rungs`' limits for a fit of `epochs` on `train_images` (batch decided): the last rung's
    epochs (`--search-epochs`, else a fifth of the fit's, raised on small data until the last rung
    reaches SEARCH_MIN_STEPS, never past the fit's epochs) and images, and each rung's floors."""
    max_images = min(config.search_images or train_images, train_images)
    least = SEARCH_MIN_STEPS * config.batch_size
    max_epochs = config.search_epochs or min(epochs, max(1, epochs // 5, math.ceil(least / max_images)))
    return {
        "max_epochs": max_epochs,
        "max_images": max_images,
        "min_images": min(SEARCH_MIN_IMAGES, max_images),
        "min_images_seen": least,
    }


def _search(
    config: FitConfig, run: Path, assessments, teacher, data, train_config, plan, cache_dir, observer
):
    """The student choice: read from the run's `search.json` when an earlier attempt finished it, else
    successive halving over the feasible candidates ranked by `config.objective`, with the chance
    check against the validation labels' largest class (`edgekd.search.select`), saved for a resume.
    Under torchrun every rank trains the trials together and rank 0's choice is the one kept."""
    from edgekd.catalog import build_model
    from edgekd.distill.distributed import current_world, share_from_main
    from edgekd.search.evidence import chance_level, evidence
    from edgekd.search.halving import parse_budget
    from edgekd.search.select import SearchResult, select_student

    saved = run / "search.json"
    if saved.exists():
        log.info("search: done in an earlier attempt (%s)", saved.name)
        return SearchResult.from_json(json.loads(saved.read_text()))
    by_name = {a.candidate.name: a.candidate for a in assessments}

    def build(name: str):
        import torch

        torch.manual_seed(config.seed)
        return build_model(name, data.num_classes, **by_name[name].kwargs)

    # Trials distil offline from the frozen teacher with the fit's losses; online schemes would
    # co-train a teacher per trial, so they are ranked as offline runs.
    trial_plan = dataclasses.replace(plan, scheme="offline", qat_epochs=0)
    evaluate = evidence(
        build, teacher, data, train_config, trial_plan, cache_dir=cache_dir, observer=observer
    )
    result = select_student(
        assessments,
        evaluate,
        budget=parse_budget(config.search_budget),
        target_name=_in_words(config.targets),
        **search_rungs(config, train_config.epochs, len(data.train)),
        objective=config.objective,
        min_retention=config.min_retention,
        chance=chance_level(data.val),
        available_images=len(data.train),
    )
    world = current_world()
    result = share_from_main(result, world)
    if world.is_main:
        write_json_atomic(saved, result.to_json())
    return result


def _search_summary(assessments, search) -> dict[str, Any]:
    """What result.json and the report keep of the search: the objective it chose by, its cost and
    every candidate's point on the Pareto plot (latency: by target; accuracy: the first rung's, the
    only one every candidate ran, with its 95 % interval)."""

    def first_interval(name: str) -> list[float] | None:
        first = (search.trials_of(name) or [None])[0]
        return None if first is None or first.ci_low is None else [first.ci_low, first.ci_high]

    return {
        "objective": search.objective,
        "min_retention": search.min_retention,
        "chance": search.chance,
        "at_chance": search.at_chance,
        "trials": len(search.trials),
        "rungs": search.rungs,
        "seconds": search.seconds,
        "mac_images": search.mac_images,
        "stopped_early": search.stopped_early,
        "candidates": [
            {
                "name": a.candidate.name,
                "predicted_latency_ms": {name: x.predicted_latency_ms for name, x in a.per_target.items()},
                "peak_memory_mb": a.peak_memory_mb,
                "first_rung_accuracy": (search.accuracies(a.candidate.name) or [None])[0],
                "first_rung_ci95": first_interval(a.candidate.name),
                "feasible": a.feasible,
                "on_front": a.candidate.name in search.front,
                "chosen": a.candidate.name == search.chosen,
            }
            for a in assessments
        ],
    }


def _profile_on_device(config: FitConfig, run: Path, artifact, predicted_ms: float, target: str) -> dict:
    """The exported student timed on `config.device` (kept in device-profile.json, so a resumed run
    does not measure again), beside the latency predicted for the target."""
    from edgekd.devices import ProfileSettings
    from edgekd.devices.registry import connect

    saved = run / "device-profile.json"
    if saved.exists():
        return json.loads(saved.read_text())
    device = connect(config.device)
    measurement = device.profile(artifact.path, ProfileSettings(threads=config.threads))
    measured = (
        measurement.latency.median_ms if measurement.statistic == "median" else measurement.latency.mean_ms
    )
    record = {
        "device": config.device,
        "uri": measurement.device,
        "measurement": asdict(measurement),
        "measured_ms": measured,
        "statistic": measurement.statistic,
        "predicted_ms": predicted_ms,
        "predicted_for": target,
        "measured_over_predicted": measured / predicted_ms,
    }
    write_json_atomic(saved, record)
    return record


@dataclass(frozen=True)
class _Trained:
    """What the export stage ships: the float student, its QAT graph (when an int8 target asked for
    one), and the data: the test split its parity is checked on, stacked once for every target."""

    arch: str
    student: Any
    quantized: Any
    data: Any
    test_images: Any
    test_labels: Any
    seed: int
    threads: int


def _export_or_load(model, fmt: str, out_dir: Path, stem: str, contract, calibration, options):
    """The artifact `export` would write, read back when an earlier attempt already wrote it."""
    from edgekd.export import FORMATS, export, load_artifact, sidecar_path

    path = out_dir / f"{stem}-{contract.precision}{FORMATS.get(fmt).suffix}"
    if path.exists() and sidecar_path(path).exists():
        return load_artifact(path)
    return export(model, fmt, out_dir, contract=contract, stem=stem, calibration=calibration, options=options)


def _ship(trained: _Trained, target, run: Path, out_dir: Path, observer: Observer) -> dict[str, Any]:
    """Export the student for one target, check it against PyTorch on the whole test split and time
    it here when its runtime runs here. An int8 target trained quantization-aware also gets the
    same student quantized after training alone, for comparison. Returns the target's part of
    result.json (its export and host latency), the artifact, and the float student's test accuracy
    from whichever parity run had it as reference."""
    from edgekd.data import representative_images
    from edgekd.devices.local import measure_latency
    from edgekd.export import FORMATS, MIN_CALIBRATION_IMAGES, make_contract
    from edgekd.export.parity import check_parity
    from edgekd.export.source import target_format_options
    from edgekd.runtimes import can_run_here

    data, precision = trained.data, target.default_precision
    contract = make_contract(
        trained.arch, target.format, data.input_size, data.mean, data.std, data.classes, precision
    )
    spec = FORMATS.get(target.format)
    # The shipped model: the QAT graph for an int8 target when the student trained quantization-aware.
    quantized = trained.quantized if precision == "int8" else None
    shipped = quantized if quantized is not None else trained.student

    def calibration():
        return representative_images(data.train, MIN_CALIBRATION_IMAGES, seed=trained.seed)

    observer.stage("export", target.name)
    artifact = _export_or_load(
        shipped,
        target.format,
        out_dir,
        "student",
        contract,
        calibration() if precision in spec.calibrated and quantized is None else None,
        target_format_options(target).get(target.format),
    )

    observer.stage("parity", target.name)
    test_images, test_labels = trained.test_images, trained.test_labels
    runs_here = can_run_here(target.format)
    # Core ML off macOS: the exporter validated the package's spec; nothing here can execute it.
    parity = (
        check_parity(artifact, shipped, test_images, test_labels, threads=trained.threads)
        if runs_here
        else None
    )
    ptq, float_accuracy = None, parity.torch_accuracy if parity is not None and quantized is None else None
    if quantized is not None:
        # What quantization-aware training bought: the same student quantized after training alone.
        ptq_artifact = _export_or_load(
            trained.student, target.format, out_dir, "student-ptq", contract, calibration(), None
        )
        ptq_parity = check_parity(
            ptq_artifact, trained.student, test_images, test_labels, threads=trained.threads, gate=False
        )
        ptq = {
            "file": str(ptq_artifact.path.relative_to(run)),
            "size_bytes": ptq_artifact.size_bytes,
            "parity": asdict(ptq_parity),
        }
        float_accuracy = ptq_parity.torch_accuracy

    latency = None
    if runs_here:
        observer.stage("latency", target.name)
        latency = measure_latency(artifact, threads=trained.threads, observer=observer)
    return {
        "artifact": artifact,
        "float_accuracy": float_accuracy,
        "export": {
            "file": str(artifact.path.relative_to(run)),
            "format": artifact.format,
            "precision": artifact.contract.precision,
            "layout": artifact.contract.layout,
            "size_bytes": artifact.size_bytes,
            "parity": asdict(parity) if parity is not None else None,
            "parity_note": None
            if runs_here
            else f"{target.format} cannot run on this host: spec validated only",
            "quantization_aware": quantized is not None,
            "post_training_int8": ptq,  # beside a QAT artifact: the same student quantized after training
        },
        "host_latency": asdict(latency) if latency is not None else None,
    }


def _target_record(target, costed, shipped: dict[str, Any], shared_with: str | None) -> dict[str, Any]:
    """One target's entry in result.json: the target, what was predicted for the student on it, its
    artifact and its measurements (`shared_with`: the target whose identical artifact it reuses)."""
    return {
        "target": {
            "name": target.name,
            "description": target.description,
            "default_precision": target.default_precision,
            "format": target.format,
            "budget_ms": target.budgets.latency_ms,
        },
        "predicted_latency_ms": costed.predicted_latency_ms,
        "predicted_by": _prediction_basis(target),
        "peak_memory_mb": costed.peak_memory_mb,
        "model_mb": costed.model_mb,
        "fallback_ops": list(costed.fallback_ops),
        "export": shipped["export"],
        "host_latency": shipped["host_latency"],
        "shared_with": shared_with,
    }


def _view_decision(config: FitConfig, teacher, data):
    """The student's flips and shifts (`edgekd.augment.decide_views`): `--hflip/--no-hflip` and
    `--augment-shift` decide when given; otherwise the teacher's accuracy on those views of the
    validation images does. Logged once."""
    from edgekd.augment import decide_views

    decision = decide_views(
        teacher,
        data.val,
        hflip=config.hflip,
        max_shift=config.augment_shift,
        default_shift=default_shift(data.input_size) if config.augment_draws else 0,
    )
    log.info("training views: %s", decision.why)
    return decision


def default_shift(input_size: int) -> int:
    """Pixels of random translation when the user names none: an eighth of the input."""
    return max(1, input_size // 8)


def _scratch_baseline(config: FitConfig, run: Path, make_student, data, train_config, observer) -> dict:
    """The chosen student trained on the same data, recipe, augmentation and seed with the labels alone
    (`--baseline scratch`): its test accuracy against the distilled student's is what the teacher
    bought. Checkpointed like the distillation, and kept in `baseline.json` once finished."""
    from edgekd.distill.distributed import current_world
    from edgekd.distill.losses import make_loss
    from edgekd.distill.trainer import accuracy, predict, train

    path = run / "baseline.json"
    if path.exists():
        observer.stage("baseline", "done in an earlier attempt")
        return json.loads(path.read_text())
    observer.stage("baseline")
    student = make_student()
    started = time.perf_counter()
    history = train(
        student,
        data,
        train_config,
        loss=make_loss("ce", label_smoothing=config.label_smoothing),
        checkpoint_dir=run / "checkpoints" / "baseline",
        observer=observer,
        description="baseline: the student without the teacher",
    )
    baseline = {
        "kind": "scratch",
        "description": "the same student, data, recipe and seed, trained on the labels alone",
        "test_accuracy": accuracy(*predict(student, data.test)),
        "seconds": round(time.perf_counter() - started, 1),
        "history": [asdict(m) for m in history],
    }
    if current_world().is_main:
        write_json_atomic(path, baseline)
    return baseline


def _interrupts_name_stage_and_run(fit_body):
    """`fit` whose Ctrl-C raises `RunInterrupted` with the stage under way and the run directory to
    resume, and whose file-system errors (a full disk) say how to resume once they are mended: the
    body gets a `StageTracker` as its observer and tells it the run directory."""

    @functools.wraps(fit_body)
    def fit(config: FitConfig, *, resume: Path | None = None, observer: Observer | None = None):
        stages = StageTracker(observer or SilentObserver())
        stages.run = str(resume) if resume is not None else None
        try:
            return fit_body(config, resume=resume, observer=stages)
        except KeyboardInterrupt as e:
            raise RunInterrupted(stages.current or "setup", stages.run) from e
        except OSError as e:
            if stages.run is None:
                raise
            said = str(e) if isinstance(e, FileSystemError) else describe_os_error(e)
            raise FileSystemError(
                f"{said}; then resume with: edgekd fit --resume {stages.run}", e.errno, e.filename
            ) from e

    return fit


@_interrupts_name_stage_and_run
def fit(config: FitConfig, *, resume: Path | None = None, observer: Observer | None = None) -> dict[str, Any]:
    """Distil a student for `config.target` and write everything into a run directory.

    Several targets get one student that fits all of them: the search keeps only candidates feasible
    on every target, the student is distilled once (quantization-aware when one target ships int8),
    and each target gets its own artifact in `exports/<target>/`, parity and latency. Targets that
    need the same artifact (format, precision and options) share one file. `--device` profiles the
    first target's artifact.

    With `resume`, the run directory's own `config.yaml` is used and finished stages are skipped.
    Returns the content of `result.json`; under `torchrun`, ranks other than 0 return only the run
    directory and their rank once the student is trained.
    """
    import torch

    from edgekd import training_time
    from edgekd.catalog import build_model, load_students, load_teacher_recipe, student_registry
    from edgekd.checkpoint import ModelInfo, load_model, save_model
    from edgekd.data import decode_once, load_data, stack
    from edgekd.distill.distributed import barrier, current_world, share_from_main
    from edgekd.distill.stage import distil_student, quantization_aware
    from edgekd.distill.trainer import accuracy, predict
    from edgekd.export.source import target_format_options
    from edgekd.report import write_metrics_csv, write_reports
    from edgekd.search import assess_targets, write_search_csv
    from edgekd.targets import get_target
    from edgekd.teachers import default_cache_dir, resolve_teacher

    observer = observer or SilentObserver()
    world = current_world()
    fit_started = time.perf_counter()
    if resume is not None:
        # The run's own config.yaml rules; where `config` differs from it, the difference is applied
        # if it only affects the stages after training and refused otherwise (`resume_config`), never
        # ignored. Rank 0 alone writes changes back; the other ranks read the run's file as it is.
        resume = Path(resume)
        saved = FitConfig.from_yaml(resume / "config.yaml") if (resume / "config.yaml").is_file() else None
        changes = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(FitConfig)
            if saved is not None and world.is_main and getattr(config, f.name) != getattr(saved, f.name)
        }
        config = resume_config(resume, changes)
    # Everything that can be checked without training fails here, before a run directory exists: the
    # target names, the loss and scheme, the student's name, the device, and the data folder.
    targets = [get_target(name, config.targets_dir) for name in config.targets]
    plan = _distill_plan(config, targets)
    _check_teacher_fits_plan(config, plan)
    _check_models(config, plan)
    candidates = load_students()
    if config.student is not None:
        candidates = [student_registry(candidates).get(config.student)]
    if config.device is not None:
        from edgekd.devices.registry import connect

        connect(config.device)  # resolves a name or parses a URI; the device is not contacted yet
    splits = load_data(config.data, config.input_size)
    # Under torchrun every rank runs fit: rank 0 owns the run directory and, after training, the
    # stages that write files (export, parity, latency, report); the others train and return.
    if resume is not None:
        run = resume
    elif world.is_main:
        run = _new_run_dir(config)
        write_text_atomic(run / "config.yaml", yaml.safe_dump(to_mapping(config), sort_keys=False))
    run = share_from_main(run if world.is_main or resume is not None else None, world)
    log.info("run directory %s", run)
    observer.run = str(run)  # the StageTracker of _interrupts_name_stage_and_run

    # Decided after config.yaml is written, which keeps the user's "no batch size" so that a resume
    # with the same options matches it; the same data decide the same batch again.
    config = _with_batch_size(config, len(splits.train))

    observer.stage("data")
    # Images are decoded once into the cache, so every epoch after the first reads plain arrays.
    data = decode_once(splits, config.cache_dir or default_cache_dir(), observer)

    observer.stage("teacher")
    recipe = load_teacher_recipe()
    if config.teacher_epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=config.teacher_epochs)
    teacher_seconds = training_time.check_teacher_time(
        config, data, recipe, config.cache_dir or default_cache_dir()
    )
    teacher = resolve_teacher(
        config.teacher,
        config.teacher_weights,
        data,
        cache_dir=config.cache_dir or default_cache_dir(),
        recipe=recipe,
        seed=config.seed,
        observer=observer,
    )
    teacher_test = accuracy(*predict(teacher.model, data.test))
    teacher_params, teacher_macs = _teacher_cost(teacher.model, data.input_size)

    views = _view_decision(config, teacher.model, data)
    observer.stage("search")
    assessments = assess_targets(candidates, targets, data.input_size, data.num_classes)
    train_config = _train_config(config, data.input_size, views)
    cache_dir = config.cache_dir or default_cache_dir()
    # The training plan: predicted search and final-training seconds; under --time-budget it drops
    # candidates, cuts epochs and gives the search its share (edgekd.training_time). Rank 0 times the
    # candidates alone, and every rank follows its plan, so all train the same trials.
    timing = share_from_main(
        training_time.plan_fit(
            config,
            assessments,
            teacher.model,
            teacher.info.arch,
            data,
            train_config,
            plan,
            cache_dir,
            spent=time.perf_counter() - fit_started,
            teacher_seconds=teacher_seconds,
        )
        if world.is_main
        else None,
        world,
    )
    assessments, train_config = timing.assessments, timing.train_config(train_config)
    search_started = time.perf_counter()
    search = _search(
        timing.search_config(config),
        run,
        timing.search_assessments,
        teacher.model,
        data,
        train_config,
        plan,
        cache_dir,
        observer,
    )
    search_seconds = time.perf_counter() - search_started
    chosen = next(a for a in assessments if a.candidate.name == search.chosen)
    reason = search.reason
    if world.is_main:
        write_search_csv(run / "search.csv", assessments, search)
    log.info("student: %s", reason)
    gap = teacher_params / chosen.params
    if gap > CAPACITY_GAP and plan.scheme != "assistant":
        log.info(
            "the teacher has %.0fx the student's parameters: --scheme assistant would distil through an "
            "intermediate catalog model (TAKD); with short recipes it lost to plain KD on EuroSAT "
            "(README, Choosing the student)",
            gap,
        )

    checkpoints = run / "checkpoints"

    def make_student():
        torch.manual_seed(config.seed)
        return build_model(chosen.candidate.arch, data.num_classes, **chosen.candidate.kwargs)

    student_path = run / "student.safetensors"
    history_path = run / "history.json"
    quantized = None
    final_started = time.perf_counter()
    if student_path.exists() and history_path.exists():
        observer.stage("distill", "done in an earlier attempt")
        student, _ = load_model(student_path)
        recorded = json.loads(history_path.read_text())
        history, distillation = recorded["student"], recorded["description"]
    else:
        observer.stage("distill")
        assistant = _assistant(config, plan, assessments, chosen, teacher_macs, data.num_classes)
        distilled = distil_student(
            make_student,
            teacher.model,
            data,
            train_config,
            plan,
            make_assistant=assistant,
            arch=chosen.candidate.arch,
            cache_dir=cache_dir,
            checkpoint_dir=checkpoints,
            observer=observer,
        )
        student, quantized, distillation = distilled.student, distilled.quantized, distilled.description
        history = [asdict(m) for m in distilled.history]
        info = ModelInfo(
            chosen.candidate.arch,
            data.classes,
            data.input_size,
            data.mean,
            data.std,
            kwargs=dict(chosen.candidate.kwargs),
            provenance={"teacher": teacher.source, "distillation": distillation},
        )
        if world.is_main:
            save_model(student_path, student, info)
            steps = {name: [asdict(m) for m in epochs] for name, epochs in distilled.steps.items()}
            write_json_atomic(history_path, {"student": history, "steps": steps, "description": distillation})
    if plan.qat_epochs and quantized is None:
        # A resumed run rebuilds the QAT graph from its finished checkpoint (every rank, since
        # training is collective under torchrun).
        quantized = quantization_aware(
            student,
            teacher.model,
            data,
            train_config,
            plan,
            arch=chosen.candidate.arch,
            checkpoint_dir=checkpoints / "qat",
        ).model
    baseline = None
    if config.baseline == "scratch":
        baseline = _scratch_baseline(config, run, make_student, data, train_config, observer)
    barrier(world)
    if not world.is_main:
        return {"run": str(run), "rank": world.rank}
    timed = timing.outcome(chosen.candidate.name, search_seconds, time.perf_counter() - final_started)
    write_metrics_csv(run / "metrics.csv", history)

    test_images, test_labels = stack(data.test)
    trained = _Trained(
        chosen.candidate.arch, student, quantized, data, test_images, test_labels, config.seed, config.threads
    )
    records, shipped_by_key = [], {}
    for target in targets:
        # Targets that would get the same file (pi5 and pi4: TFLite fp32) share one artifact.
        key = (target.format, target.default_precision, repr(target_format_options(target)))
        shared_with = shipped_by_key.get(key, (None,))[0]
        if shared_with is None:
            out_dir = run / "exports" if len(targets) == 1 else run / "exports" / target.name
            shipped_by_key[key] = (target.name, _ship(trained, target, run, out_dir, observer))
        shipped = shipped_by_key[key][1]
        records.append(_target_record(target, chosen.per_target[target.name], shipped, shared_with))
        if shipped["host_latency"] is not None and shared_with is None:
            profile = "profile.json" if len(targets) == 1 else f"profile-{target.name}.json"
            write_json_atomic(run / profile, shipped["host_latency"])
    measured = [s["float_accuracy"] for _, s in shipped_by_key.values() if s["float_accuracy"] is not None]
    # The float PyTorch student on the whole test split, from a parity run that had it as reference.
    student_test = measured[0] if measured else accuracy(*predict(student, data.test))

    first = records[0]
    device_latency = None
    if config.device is not None:
        observer.stage("device")
        first_artifact = next(iter(shipped_by_key.values()))[1]["artifact"]  # the first target ships first
        device_latency = _profile_on_device(
            config, run, first_artifact, first["predicted_latency_ms"], targets[0].name
        )

    result = {
        "run": str(run),
        "config": to_mapping(config),
        # `target`, `export` and `host_latency` are the first target's; `targets` has every one.
        "target": first["target"],
        "targets": records,
        "data": {
            "name": data.name,
            "num_classes": data.num_classes,
            "input_size": data.input_size,
            "train": len(data.train),
            "val": len(data.val),
            "test": len(data.test),
        },
        "teacher": {
            "arch": teacher.info.arch,
            "source": teacher.source,
            "cached": teacher.cached,
            "params": teacher_params,
            "macs": teacher_macs,
            "test_accuracy": teacher_test,
        },
        "student": {
            "arch": chosen.candidate.arch,
            "params": chosen.params,
            "macs": chosen.macs,
            "test_accuracy": student_test,
            "predicted_latency_ms": first["predicted_latency_ms"],
            "predicted_for": targets[0].name,
            "predicted_by": first["predicted_by"],
            "peak_memory_mb": chosen.peak_memory_mb,
            "reason": reason,
            "checkpoint": student_path.name,
            "distillation": distillation,
            "scheme": plan.scheme,
            "loss": list(plan.loss),
        },
        "search": _search_summary(assessments, search),
        "export": first["export"],
        "host_latency": first["host_latency"],
        "device_latency": device_latency,
        "history": history,
        "augmentation": views.to_json(),
        "baseline": baseline,
        "plan": timed,
    }
    observer.stage("report")
    write_reports(run, result)
    write_json_atomic(run / "result.json", result)  # last: a run with result.json finished
    return result
