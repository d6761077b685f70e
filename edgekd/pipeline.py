"""`fit()`: target → student choice → distillation → export → parity → latency → report, in a run
directory. `fit` checks what it can before anything runs, then runs a list of stages (`edgekd.fit_stages`,
`edgekd.fit_shipping`) over a `RunDir`: a stage whose outputs are complete is read back instead of run
again, so an interrupted fit resumes.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import yaml

from edgekd._config import to_mapping
from edgekd._io import describe_os_error, write_text_atomic
from edgekd.errors import FileSystemError, RunInterrupted
from edgekd.fit_config import OPTION_GROUPS, FitConfig, resume_config
from edgekd.fit_recipe import (
    check_models,
    check_teacher_fits_plan,
    make_distill_plan,
    with_data_defaults,
)
from edgekd.fit_result import FitResult
from edgekd.progress import Observer, SilentObserver, StageTracker
from edgekd.rundir import RunDir
from edgekd.stage_plan import stage_label
from edgekd.training_time import search_rungs

__all__ = ["FitConfig", "FitResult", "fit", "resume_config", "search_rungs"]

log = logging.getLogger(__name__)


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
def fit(
    config: FitConfig, *, resume: Path | None = None, observer: Observer | None = None
) -> FitResult | dict[str, object]:
    """Distil a student for `config.target` and write everything into a run directory.

    Several targets get one student that fits all of them: the search keeps only candidates feasible
    on every target, the student is distilled once (quantization-aware when one target ships int8),
    and each target gets its own artifact in `exports/<target>/`, parity and latency. Targets that
    need the same artifact (format, precision and options) share one file. `--device` profiles the
    first target's artifact.

    With `resume`, the run directory's own `config.yaml` is used and finished stages are skipped.
    Returns the FitResult that result.json holds; under `torchrun`, ranks other than 0 return only
    the run directory and their rank once the student is trained.
    """
    from edgekd.data import stack
    from edgekd.distill.distributed import barrier, current_world
    from edgekd.fit_shipping import shipping_stages
    from edgekd.fit_stages import run_stages, training_stages
    from edgekd.report import write_metrics_csv

    observer = observer or SilentObserver()
    world = current_world()
    started = time.perf_counter()
    if resume is not None:
        config = _resumed_config(config, Path(resume), world)
    context = _checked_context(config, resume, observer, world, started)
    log.info("run directory %s", context.run)
    observer.run = str(context.run)  # the StageTracker of _interrupts_name_stage_and_run
    if resume is not None:  # the plan says which stages an earlier attempt finished
        stages = [*training_stages(context), *shipping_stages(context)]
        context.done_earlier = frozenset(
            stage_label(s.name, s.detail) for s in stages if s.is_done(context.run)
        )

    run_stages(training_stages(context), context, world)
    barrier(world)
    if not world.is_main:
        return {"run": str(context.run), "rank": world.rank}
    final_seconds = time.perf_counter() - context.final_started
    context.timed = context.timing.outcome(
        context.chosen.candidate.name, context.search_seconds, final_seconds
    )
    write_metrics_csv(context.run.metrics_csv, context.history)
    context.test_images, context.test_labels = stack(context.data.test)
    run_stages(shipping_stages(context), context)
    if context.estimates:
        _compare_stage_times(context)
    return context.result


def _compare_stage_times(context) -> None:
    """The estimate of every stage beside what it took, logged; result.json written once more with the
    report's own time, which the report itself could not hold."""
    import dataclasses

    from edgekd._io import write_json_atomic
    from edgekd.stage_plan import compared, comparison_table

    stages = compared(context.estimates, context.stage_seconds)
    table = comparison_table(stages)
    log.info("%s", table, extra={"table": table})
    context.result = dataclasses.replace(context.result, stages=stages)
    write_json_atomic(context.run.result, context.result.to_json())


def _resumed_config(config: FitConfig, run: Path, world) -> FitConfig:
    """The run's own config.yaml rules; where `config` differs from it, the difference is applied if
    it only affects the stages after training and refused otherwise (`resume_config`), never ignored.
    Rank 0 alone writes changes back; the other ranks read the run's file as it is."""
    path = RunDir(run).config
    saved = FitConfig.from_yaml(path) if path.is_file() else None
    changes = {
        name: config.option(name)
        for name in OPTION_GROUPS
        if saved is not None and world.is_main and config.option(name) != saved.option(name)
    }
    return resume_config(run, changes)


def _checked_context(config: FitConfig, resume: Path | None, observer, world, started: float):
    """The stages' context, after everything that can be checked without training: the target names,
    the loss and scheme, the student's name, the device and the data folder; only then is a run
    directory made (by rank 0, which owns it: under torchrun the other ranks train and return)."""
    from edgekd.catalog import load_students, student_registry
    from edgekd.distill.distributed import share_from_main
    from edgekd.fit_config import decide_input_size
    from edgekd.fit_shipping import shipping_plan
    from edgekd.fit_stages import FitContext
    from edgekd.paths import default_cache_dir
    from edgekd.sources import scan_data
    from edgekd.targets import get_target

    targets = [get_target(name, config.targets_dir) for name in config.targets]
    plan = make_distill_plan(config, targets)
    check_teacher_fits_plan(config, plan)
    check_models(config, plan)
    candidates = load_students()
    if config.student is not None:
        candidates = [student_registry(candidates).get(config.student)]
    if config.device is not None:
        from edgekd.devices.registry import connect

        connect(config.device)  # resolves a name or parses a URI; the device is not contacted yet
    from edgekd.distill.accelerator import resolve_accelerator

    resolve_accelerator(config.training.accelerator)  # `cuda` on a machine without one fails here
    scanned = scan_data(config.data)
    input_size, input_size_note = decide_input_size(config.input_size, scanned.native.side, targets)
    splits = scanned.splits(input_size)
    if resume is not None:
        run = RunDir(Path(resume), config.targets)
    elif world.is_main:
        run = RunDir.create(config.runs_dir, config.targets)
        write_text_atomic(run.config, yaml.safe_dump(to_mapping(config), sort_keys=False))
    run = share_from_main(run if world.is_main or resume is not None else None, world)
    # The loss, the batch, the epochs and the input size are decided after config.yaml is written,
    # which keeps the user's "no loss", "no batch size", "no epochs" and "no input size" so that a
    # resume with the same options matches it; the same data decide the same ones.
    decided = with_data_defaults(config, len(splits.train)).with_options(input_size=input_size)
    return FitContext(
        config=decided,
        run=run,
        observer=observer,
        world=world,
        targets=targets,
        plan=make_distill_plan(decided, targets),
        candidates=candidates,
        splits=splits,
        started=started,
        cache_dir=config.cache_dir or default_cache_dir(),
        input_size_note=input_size_note,
        shipping_estimates=shipping_plan,
    )
