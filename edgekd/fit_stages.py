"""The stages of `fit`, each an object with `is_done(run)`, `run(context)` and `load(context)`.

Resume is one rule, applied by `run_stages`: a stage whose outputs are complete in the run directory
(`is_done`) is read back (`load`), any other runs. A stage whose outputs are not kept in the run
directory (the decoded data and the teacher live in the cache, parity and latency are measured again
on every attempt) is never done. The stages talk through one `FitContext`, which each fills in for
those after it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edgekd._io import write_json_atomic
from edgekd.fit_config import FitConfig
from edgekd.fit_recipe import (
    assistant_factory,
    confirms_in_full,
    final_train_config,
    make_train_config,
    teacher_cost,
    view_decision,
)
from edgekd.progress import Observer
from edgekd.rundir import RunDir
from edgekd.stage_plan import stage_label
from edgekd.training_time import search_rungs

if TYPE_CHECKING:
    from edgekd.augment import ViewDecision

log = logging.getLogger(__name__)

# Above this teacher/student parameter ratio fit suggests a teacher assistant (Mirzadeh et al. 2020
# see the gap hurt plain KD once it is large; 10x is where it suggests one).
CAPACITY_GAP = 10.0
DONE_EARLIER = "done in an earlier attempt"


@dataclass
class FitContext:
    """What the stages share: the run's settings, and each stage's outputs as it finishes (None
    until then)."""

    config: FitConfig
    run: RunDir
    observer: Observer
    world: Any  # edgekd.distill.distributed's World: rank 0 alone writes the run's files
    targets: list  # edgekd.targets.Target, in the order named
    plan: Any  # edgekd.distill.stage.DistillPlan
    candidates: list
    splits: Any  # the data as loaded, before decoding
    started: float  # perf_counter at the start of fit, for the training-time plan
    cache_dir: Any = None
    input_size_note: str = ""  # how the input size was decided (fit_config.decide_input_size)
    data_mode: str = ""  # "decode" or "stream" (edgekd.streaming.decide_data_mode)
    data_reading: str = ""  # the data stage's sentence on how the images are read, and why
    # The plan of every stage (edgekd.stage_plan.StageEstimate), the seconds each stage took in this
    # attempt by its label, and the estimates of the stages after training (set by `fit`, which knows
    # them: fit_shipping stands above this module).
    estimates: list = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    shipping_estimates: Any = None  # (context, student rate, teacher cached) -> list of StageEstimate
    done_earlier: frozenset[str] = frozenset()  # labels of the stages a resumed run will load
    done_by: dict[str, str] = field(default_factory=dict)  # a stage done by an earlier one: why
    data: Any = None
    teacher: Any = None
    teacher_seconds: float | None = None  # what training the teacher took, when it was trained here
    teacher_test: float | None = None
    teacher_test_top1: list[int] | None = None  # its class for each test image, for the report
    teacher_latency: dict[str, Any] | None = None  # the teacher timed on this host (fit_shipping)
    teacher_export_ahead: Any = None  # the teacher's export running beside the student's (fit_shipping)
    teacher_params: int | None = None
    teacher_macs: int | None = None
    views: ViewDecision | None = None
    assessments: list | None = None
    train_config: Any = None  # the final training's TrainConfig (and the baseline's)
    trial_config: Any = None  # the search trials' (fit_recipe.final_train_config says how they differ)
    timing: Any = None  # edgekd.training_time's FitTiming
    search: Any = None  # edgekd.search.select.SearchResult
    search_seconds: float | None = None
    chosen: Any = None  # the chosen candidate's assessment
    final_started: float | None = None
    student: Any = None
    quantized: Any = None  # the QAT graph, when an int8 target asked for one
    history: list | None = None
    distillation: str | None = None
    baseline: dict[str, Any] | None = None
    test_images: Any = None
    test_labels: Any = None
    artifacts: dict[tuple[str, str], Any] = field(default_factory=dict)  # (target, stem) -> Artifact
    shipped: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> its checks
    device_latency: dict[str, Any] | None = None
    timed: dict[str, Any] | None = None  # the training-time plan against what it took
    result: Any = None  # the FitResult, once reported

    def make_student(self):
        import torch

        from edgekd.catalog import build_model

        torch.manual_seed(self.config.training.seed)
        candidate = self.chosen.candidate
        return build_model(candidate.arch, self.data.num_classes, **candidate.kwargs)


class Stage(Protocol):
    name: str  # the banner the observer shows
    detail: str  # beside the banner: the target a shipping stage works for

    def is_done(self, run: RunDir) -> bool:
        """Whether an earlier attempt left this stage's outputs complete in `run`."""

    def run(self, context: FitContext) -> None:
        """Do the stage's work, write its outputs into the run and put them in `context`."""

    def load(self, context: FitContext) -> None:
        """Put the outputs an earlier attempt wrote into `context`."""


def run_stages(stages: list[Stage], context: FitContext, world: Any = None) -> None:
    """The resume rule: load what is done, run the rest, in order. Consecutive stages of one phase
    (the search's plan and its trials; an artifact and its comparison file) share one banner.

    `world` (edgekd.distill.distributed's World) is the ranks that run `stages` together (None: this
    process alone). Whether a stage is done is then rank 0's answer, given to every rank: rank 0 alone
    writes the run directory, so another rank's look at it races rank 0's writes. A stage done by an
    earlier one (the search's full training is the final student) is done on rank 0 as soon as it has
    written it, while another rank, a moment ahead, would find nothing, train it again and wait in a
    collective rank 0 never enters."""
    from edgekd.distill.distributed import share_from_main

    shown = None
    for stage in stages:
        if world is None:
            done = stage.is_done(context.run)
        else:
            done = share_from_main(stage.is_done(context.run) if world.is_main else None, world)
        if (stage.name, stage.detail) != shown:
            why = context.done_by.get(stage.name, DONE_EARLIER)
            context.observer.stage(stage.name, why if done and not stage.detail else stage.detail)
            shown = (stage.name, stage.detail)
        if done:
            log.info("%s: %s", stage.name, context.done_by.get(stage.name, DONE_EARLIER))
            stage.load(context)
        else:
            started = time.perf_counter()
            stage.run(context)
            # By the banner's label, as the plan names it: a stage of two parts adds them up.
            label = stage_label(stage.name, stage.detail)
            context.stage_seconds[label] = (
                context.stage_seconds.get(label, 0.0) + time.perf_counter() - started
            )


class _NeverDone:
    """A stage whose outputs are not kept in the run directory: it runs on every attempt."""

    detail = ""

    def is_done(self, run: RunDir) -> bool:
        return False

    def load(self, context: FitContext) -> None:  # pragma: no cover: never done, never loaded
        raise AssertionError(f"{type(self).__name__} keeps nothing to load")


class DataStage(_NeverDone):
    """Images decoded once into the cache, so every epoch after the first reads plain arrays."""

    name = "data"

    def run(self, context: FitContext) -> None:
        from edgekd.data import decode_once, decoded_images
        from edgekd.data_summary import data_mode_line, summary_lines
        from edgekd.fit_config import fresh_view_options
        from edgekd.stage_plan import StageEstimate, rule, stated
        from edgekd.streaming import decide_data_mode, default_workers, streamed

        splits, config = context.splits, context.config
        mode = decide_data_mode(
            splits, config.data_mode, context.cache_dir, fresh_view_options(config.training)
        )
        to_decode = decoded_images(splits, context.cache_dir) if mode.mode == "decode" else 0
        context.estimates = [
            StageEstimate(
                "data",
                "",
                rule("decode", to_decode),
                f"{stated('decode')} ({to_decode:,} not decoded before)",
            )
        ]
        workers = default_workers() if mode.mode == "stream" else 0
        context.data_mode, context.data_reading = mode.mode, data_mode_line(mode.mode, mode.reason, workers)
        if context.world.is_main:
            counts = {name: len(getattr(splits, name)) for name in ("train", "val", "test")}
            lines = summary_lines(splits.name, counts, splits.preprocessing.labels, splits.native)
            for line in (*lines, context.input_size_note, context.data_reading):
                log.info("data: %s", line)
        if mode.mode == "stream":
            context.data = streamed(splits)
        else:
            context.data = decode_once(splits, context.cache_dir, context.observer)


class TeacherStage(_NeverDone):
    """The teacher, loaded or trained (and cached outside the run), its test accuracy and cost, and the
    flip decision that needs it."""

    name = "teacher"

    def run(self, context: FitContext) -> None:
        from edgekd import training_time
        from edgekd.catalog import load_teacher_recipe
        from edgekd.distill.trainer import accuracy, predict
        from edgekd.teachers import resolve_teacher

        config, data = context.config, context.data
        recipe = load_teacher_recipe()
        if config.teacher_epochs is not None:
            recipe = dataclasses.replace(recipe, epochs=config.teacher_epochs)
        teacher_seconds = training_time.check_teacher_time(config, data, recipe, context.cache_dir)
        context.teacher = resolve_teacher(
            config.teacher,
            config.teacher_weights,
            data,
            cache_dir=context.cache_dir,
            recipe=recipe,
            seed=config.training.seed,
            observer=context.observer,
            accelerator=config.training.accelerator,
        )
        context.teacher_seconds = teacher_seconds
        logits, labels = predict(context.teacher.model, data.test)
        context.teacher_test = accuracy(logits, labels)
        context.teacher_test_top1 = logits.argmax(1).tolist()
        context.teacher_params, context.teacher_macs = teacher_cost(context.teacher.model, data.input_size)
        context.views = view_decision(config, context.teacher.model, data)


class PlanStage(_NeverDone):
    """Every candidate costed on every target, and the training plan: predicted search and final
    training seconds; under --time-budget it drops candidates, cuts epochs and gives the search its
    share (edgekd.training_time). Rank 0 times the candidates alone, and every rank follows its plan,
    so all train the same trials."""

    name = "search"

    def run(self, context: FitContext) -> None:
        from edgekd import training_time
        from edgekd.distill.distributed import share_from_main
        from edgekd.fit_plan import training_rows_open, with_training_rows
        from edgekd.search import assess

        config, data, world = context.config, context.data, context.world
        waited_for_teacher = training_rows_open(context.estimates)
        # Costed by the plan stage already (from the cache, on every rank alike).
        assessments = context.assessments or assess(
            context.candidates, context.targets, data.input_size, data.num_classes
        )
        train_config = make_train_config(config, data.input_size, context.views)
        timing = share_from_main(
            training_time.plan_fit(
                config,
                assessments,
                context.teacher.model,
                context.teacher.info.arch,
                data,
                train_config,
                context.plan,
                context.cache_dir,
                spent=time.perf_counter() - context.started,
                teacher_seconds=context.teacher_seconds,
                # The plan of every stage showed the search and the final training already, unless
                # it waited for the teacher; under a time budget this table says how it was split.
                announce=(config.time_budget is not None or not context.estimates or waited_for_teacher),
                confirm=confirms_in_full(config, len(data.train), context.plan),
            )
            if world.is_main
            else None,
            world,
        )
        context.timing = timing
        context.assessments, context.trial_config = timing.assessments, timing.train_config(train_config)
        if world.is_main and waited_for_teacher:
            context.estimates = with_training_rows(context, timing)
        context.train_config = final_train_config(config, context.trial_config, len(data.train))


class SearchStage:
    """The student choice: successive halving over the feasible candidates ranked by
    `config.objective`, with the chance check against the validation labels' largest class
    (`edgekd.search.select`), kept in search.json; on small data for retention, full trainings fastest
    first (`edgekd.search.confirm`), the passing one saved as the final student. Under torchrun every
    rank trains the trials together and rank 0's choice is the one kept."""

    name, detail = "search", ""

    def is_done(self, run: RunDir) -> bool:
        return run.search.exists()

    def run(self, context: FitContext) -> None:
        from edgekd.catalog import build_model
        from edgekd.distill.distributed import main_clock, share_from_main
        from edgekd.search.evidence import chance_level, evidence
        from edgekd.search.halving import parse_budget
        from edgekd.search.select import select_student

        started = time.perf_counter()
        config, data = context.timing.search_config(context.config), context.data
        assessments = context.timing.search_assessments
        by_name = {a.candidate.name: a.candidate for a in assessments}

        def build(name: str):
            import torch

            torch.manual_seed(config.training.seed)
            return build_model(name, data.num_classes, **by_name[name].kwargs)

        if context.timing.mode == "confirm":
            self._confirm(context, config, assessments, build, started)
            return
        # Trials distil offline from the frozen teacher with the fit's losses; online schemes would
        # co-train a teacher per trial, so they are ranked as offline runs.
        trial_plan = dataclasses.replace(context.plan, scheme="offline", qat_epochs=0)
        train_config = context.trial_config
        evaluate = evidence(
            build,
            context.teacher.model,
            data,
            train_config,
            trial_plan,
            cache_dir=context.cache_dir,
            observer=context.observer,
            rungs=context.timing.rungs,
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
            # Rank 0's: the ranks must agree on when a budget in seconds is spent.
            clock=main_clock(context.world),
        )
        result = share_from_main(result, context.world)
        if context.world.is_main:
            write_json_atomic(context.run.search, result.to_json())
        context.search = result
        self._chose(context, time.perf_counter() - started)

    def _confirm(self, context: FitContext, config, assessments, build, started: float) -> None:
        """Full trainings until one keeps --min-retention of the teacher: the chosen one is saved as
        the distillation's output (its quantization-aware epochs, if any, follow there), then
        search.json, so a run interrupted between them searches again."""
        from edgekd.distill.distributed import main_clock, share_from_main
        from edgekd.search.confirm import confirm_in_full
        from edgekd.search.halving import parse_budget

        confirmed = confirm_in_full(
            assessments,
            build,
            context.teacher.model,
            context.data,
            context.train_config,
            dataclasses.replace(context.plan, qat_epochs=0),
            budget=parse_budget(config.search_budget),
            target_name=_in_words(config.targets),
            min_retention=config.min_retention,
            cache_dir=context.cache_dir,
            observer=context.observer,
            checkpoint_dir=context.run.checkpoints / "search",
            clock=main_clock(context.world),
        )
        context.search = share_from_main(confirmed.result, context.world)
        self._chose(context, time.perf_counter() - started)
        DistillStage.keep(context, confirmed.trained)
        context.done_by["distill"] = "the search's full training is the final student"
        if context.world.is_main:
            write_json_atomic(context.run.search, context.search.to_json())

    def load(self, context: FitContext) -> None:
        from edgekd.search.select import SearchResult

        started = time.perf_counter()
        context.search = SearchResult.from_json(json.loads(context.run.search.read_text()))
        self._chose(context, time.perf_counter() - started)

    def _chose(self, context: FitContext, seconds: float) -> None:
        from edgekd.search import write_search_csv

        search = context.search
        context.search_seconds = seconds
        context.chosen = next(a for a in context.assessments if a.candidate.name == search.chosen)
        if context.world.is_main:
            write_search_csv(context.run.search_csv, context.assessments, search)
        log.info("student: %s", search.reason)
        gap = context.teacher_params / context.chosen.params
        if gap > CAPACITY_GAP and context.plan.scheme != "assistant":
            log.info(
                "the teacher has %.0fx the student's parameters: --scheme assistant would distil through "
                "an intermediate catalog model (TAKD); with short recipes it lost to plain KD on EuroSAT "
                "(README, Choosing the student)",
                gap,
            )


class DistillStage:
    """The chosen student distilled (and, for an int8 target, fine-tuned quantization-aware), saved
    with its ModelInfo and its epochs. An interrupted distillation resumes from its checkpoints."""

    name, detail = "distill", ""

    def is_done(self, run: RunDir) -> bool:
        return run.student.exists() and run.history.exists()

    def run(self, context: FitContext) -> None:
        from edgekd.distill.stage import distil_student

        context.final_started = time.perf_counter()
        config, data, chosen, run = context.config, context.data, context.chosen, context.run
        assistant = assistant_factory(
            config, context.plan, context.assessments, chosen, context.teacher_macs, data.num_classes
        )
        distilled = distil_student(
            context.make_student,
            context.teacher.model,
            data,
            context.train_config,
            context.plan,
            make_assistant=assistant,
            arch=chosen.candidate.arch,
            cache_dir=context.cache_dir,
            checkpoint_dir=run.checkpoints,
            observer=context.observer,
        )
        self.keep(context, distilled)
        self._quantized(context)

    @staticmethod
    def keep(context: FitContext, distilled) -> None:
        """`distilled` (a `DistillResult` of the chosen student) into `context` and the run: the student
        with its ModelInfo and its epochs (also the search's passing full training, `SearchStage`)."""
        from edgekd.checkpoint import ModelInfo, save_model

        chosen, run = context.chosen, context.run
        context.student, context.quantized = distilled.student, distilled.quantized
        context.distillation = distilled.description
        context.history = [asdict(m) for m in distilled.history]
        info = ModelInfo(
            chosen.candidate.arch,
            context.data.preprocessing,
            kwargs=dict(chosen.candidate.kwargs),
            provenance={"teacher": context.teacher.source, "distillation": distilled.description},
        )
        if context.world.is_main:
            save_model(run.student, context.student, info)
            steps = {name: [asdict(m) for m in epochs] for name, epochs in distilled.steps.items()}
            record = {"student": context.history, "steps": steps, "description": distilled.description}
            write_json_atomic(run.history, record)

    def load(self, context: FitContext) -> None:
        from edgekd.checkpoint import load_model

        context.final_started = time.perf_counter()
        context.student, _ = load_model(context.run.student)
        recorded = json.loads(context.run.history.read_text())
        context.history, context.distillation = recorded["student"], recorded["description"]
        self._quantized(context)

    def _quantized(self, context: FitContext) -> None:
        """A resumed run rebuilds the QAT graph from its finished checkpoint (every rank, since
        training is collective under torchrun)."""
        from edgekd.distill.stage import quantization_aware

        if context.plan.qat_epochs and context.quantized is None:
            context.quantized = quantization_aware(
                context.student,
                context.teacher.model,
                context.data,
                context.train_config,
                context.plan,
                arch=context.chosen.candidate.arch,
                checkpoint_dir=context.run.checkpoints / "qat",
            ).model


class BaselineStage:
    """The chosen student trained on the same data, recipe, augmentation and seed with the labels alone
    (`--baseline scratch`): its test accuracy against the distilled student's is what the teacher
    bought. Checkpointed like the distillation, and kept in `baseline.json` once finished."""

    name, detail = "baseline", ""

    def is_done(self, run: RunDir) -> bool:
        return run.baseline.exists()

    def run(self, context: FitContext) -> None:
        from edgekd.distill.losses import make_loss
        from edgekd.distill.trainer import accuracy, predict, train

        student = context.make_student()
        started = time.perf_counter()
        history = train(
            student,
            context.data,
            context.train_config,
            loss=make_loss("ce", label_smoothing=context.config.distillation.label_smoothing),
            checkpoint_dir=context.run.checkpoints / "baseline",
            observer=context.observer,
            description="baseline: the student without the teacher",
        )
        context.baseline = {
            "kind": "scratch",
            "description": "the same student, data, recipe and seed, trained on the labels alone",
            "test_accuracy": accuracy(*predict(student, context.data.test)),
            "seconds": round(time.perf_counter() - started, 1),
            "history": [asdict(m) for m in history],
        }
        if context.world.is_main:
            write_json_atomic(context.run.baseline, context.baseline)

    def load(self, context: FitContext) -> None:
        context.baseline = json.loads(context.run.baseline.read_text())


def training_stages(context: FitContext) -> list[Stage]:
    """What every rank runs: data, the plan, teacher, search, distillation and, if asked, the baseline."""
    from edgekd.fit_plan import EstimateStage

    stages: list[Stage] = [
        DataStage(),
        EstimateStage(),
        TeacherStage(),
        PlanStage(),
        SearchStage(),
        DistillStage(),
    ]
    if context.config.baseline == "scratch":
        stages.append(BaselineStage())
    return stages


def _in_words(names: tuple[str, ...]) -> str:
    """The names as a phrase: pi5; pi5 and pi4; pi5, pi4 and android-cpu."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
