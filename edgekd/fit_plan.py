"""The fit's `plan` stage: after the data is decoded and before anything trains, every candidate is
costed on every target (the latency model calibrated first), the rates the training estimates need are
measured (each once per machine, cached), and the plan of every stage with its estimated wall time is
logged (`edgekd.stage_plan`). The stages after it read what it costed and measured from the cache.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError
from edgekd.fit_recipe import confirms_in_full, make_train_config
from edgekd.stage_plan import StageEstimate, duration, plan_table, rule, stated, tracing_speedup

log = logging.getLogger(__name__)


class EstimateStage:
    """Costing, the rate probe and the plan table (see the module). Rank 0 plans; under torchrun the
    other ranks cost the candidates in the search's plan, from the cache rank 0 filled."""

    name, detail = "plan", ""

    def is_done(self, run) -> bool:
        return False

    def load(self, context) -> None:  # pragma: no cover: never done, never loaded
        raise AssertionError("EstimateStage keeps nothing to load")

    def run(self, context) -> None:
        if not context.world.is_main:
            return
        rows = list(context.estimates)  # the data stage's
        rows.append(_costing(context))
        probe, teacher_arch = _probe_row(context)
        rows.append(probe)
        teacher_seconds, teacher_rate = _probe(context, teacher_arch)
        rows.append(_teacher_row(context, teacher_seconds))
        rows += _training_rows(context, teacher_seconds, teacher_rate)
        # A resumed run loads these instead of running them.
        rows = [
            StageEstimate(r.stage, r.detail, 0.0, "done in an earlier attempt")
            if r.label in context.done_earlier
            else r
            for r in rows
        ]
        context.estimates = rows
        plan = plan_table(rows, context.stage_seconds)
        log.info("%s", plan, extra={"table": plan})


def _timed(context, label: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = work()
    context.stage_seconds[label] = time.perf_counter() - started
    return value


def _costing(context) -> StageEstimate:
    """The costing row, then the costing itself, timed: the latency model of each target calibrated on
    its profile rows (each profile model traced once, cached) and every candidate costed."""
    from edgekd.latency import calibration_rows
    from edgekd.op_tables import op_table
    from edgekd.search import assess
    from edgekd.search.constraints import candidate_costs, cost_cached, tracing_workers

    data, targets, candidates = context.data, context.targets, context.candidates
    size, classes = data.input_size, data.num_classes
    calibrated = [t for t in targets if t.latency_model.estimator != "vela"]
    profile_rows = {t.name: calibration_rows(t, t.default_precision, t.threads) for t in calibrated}
    uncosted = [c for c in candidates if not cost_cached(c, size, classes)]
    names = ", ".join(t.name for t in targets)
    row = _costing_row(context, profile_rows)

    def work() -> list:
        for target in calibrated:
            rows = profile_rows[target.name]
            if rows:
                task = context.observer.task(f"calibrating the {target.name} latency model", len(rows))
                for r in rows:
                    op_table(r.model, r.input_size)
                    task.advance()
                task.close()
        if uncosted:  # every candidate at once, so the uncached ones are traced on every core
            workers = min(len(uncosted), tracing_workers())
            processes = f"{workers} process{'es' if workers > 1 else ''}"
            task = context.observer.task(
                f"tracing {len(uncosted)} candidates at {size} px in {processes}", len(candidates)
            )
            candidate_costs(candidates, size, classes, on_cost=task.advance)
            task.close()
        task = context.observer.task(f"costing {len(candidates)} candidates for {names}", len(candidates))
        assessed = []
        for candidate in candidates:
            assessed += assess([candidate], targets, size, classes)
            task.advance()
        task.close()
        return assessed

    context.assessments = _timed(context, "costing", work)
    return row


def _costing_row(context, profile_rows: dict) -> StageEstimate:
    """The costing stage's estimate: the candidates not yet traced (on every core), the profile models
    not yet traced, and the Vela estimates not yet cached."""
    from edgekd.op_tables import needs_tracing
    from edgekd.search.constraints import cost_cached, npu_cached, tracing_workers

    data, targets, candidates = context.data, context.targets, context.candidates
    size, classes = data.input_size, data.num_classes
    untraced = {
        (r.model, r.input_size)
        for rows in profile_rows.values()
        for r in rows
        if needs_tracing(r.model, r.input_size)
    }
    uncosted = [c for c in candidates if not cost_cached(c, size, classes)]
    # Vela runs for each candidate on an Ethos-U target whose weights and arena alone do not already
    # break its budgets (unknown until it is traced): counted for every uncached one, an upper bound.
    unestimated = sum(
        not npu_cached(c, t, size, classes)
        for t in targets
        if t.latency_model.estimator == "vela"
        for c in candidates
    )
    return StageEstimate(
        "costing",
        "",
        rule("trace", len(uncosted)) / tracing_speedup(min(len(uncosted), tracing_workers()))
        + rule("calibration trace", len(untraced))
        + rule("vela", unestimated),
        f"{stated('trace')} ({len(uncosted)} of {len(candidates)}"
        f"{f', {tracing_workers()} processes' if len(uncosted) > 1 and tracing_workers() > 1 else ''}), "
        f"{stated('calibration trace')[5:]} ({len(untraced)})"
        + (f", {stated('vela')[5:]} (up to {unestimated})" if unestimated else ""),
    )


def _teacher_arch(config, recipe) -> str | None:
    """The timm architecture of the teacher before it is loaded: the catalog's recipe, or a timm name
    given with --teacher; None for a teacher file (its speed is known only once it is loaded)."""
    if config.teacher is None:
        return recipe.arch
    if not Path(config.teacher).exists() and "." not in config.teacher:
        return config.teacher
    return None


def _recipe(config):
    from edgekd.catalog import load_teacher_recipe

    recipe = load_teacher_recipe()
    return (
        recipe if config.teacher_epochs is None else dataclasses.replace(recipe, epochs=config.teacher_epochs)
    )


def _probed(context) -> list:
    """The candidates the training plan measures without a time budget: those that may enter the
    search (`plan_fit` measures the same ones, and under a budget perhaps a few more)."""
    from edgekd.search.confirm import confirmations
    from edgekd.search.halving import parse_budget
    from edgekd.search.ranking import capacity, entrants, entry_order

    feasible = [a for a in context.assessments if a.feasible]
    budget = parse_budget(context.config.search_budget)
    if confirms_in_full(context.config, len(context.data.train), context.plan):
        return confirmations(feasible, budget)
    if budget.trials == 0:
        ordered = sorted(feasible, key=capacity, reverse=True)
    else:
        ordered = entry_order(feasible) if len(feasible) > 1 else feasible
    return entrants(ordered, None if budget.trials is None else max(1, budget.trials))


def _probe_row(context) -> tuple[StageEstimate, str | None]:
    from edgekd.training_rates import forward_cached, rates_cached

    config, data, cache = context.config, context.data, context.cache_dir
    size, classes, batch = data.input_size, data.num_classes, config.training.batch_size
    recipe = _recipe(config)
    arch = _teacher_arch(config, recipe)
    students = [
        a.candidate
        for a in _probed(context)
        if not rates_cached(a.candidate.arch, dict(a.candidate.kwargs), size, classes, batch, cache_dir=cache)
    ]
    teacher = 0
    if arch is not None:
        teacher += not rates_cached(arch, {}, size, classes, recipe.batch_size, cache_dir=cache)
        teacher += not forward_cached(arch, size, cache_dir=cache)
    count = len(students) + teacher
    return (
        StageEstimate(
            "rate probe",
            "",
            rule("probe", count),
            f"{stated('probe')} ({len(students)} students{' + the teacher' if teacher else ''} "
            "not measured before)",
        ),
        arch,
    )


def _probe(context, teacher_arch: str | None) -> tuple[float | None, float | None]:
    """Measure (or read) the rates: the candidates that may enter the search, the teacher's training
    and its forward. Returns the teacher's predicted training seconds and forward rate."""
    from edgekd.catalog import build_model
    from edgekd.training_rates import forward_rate, student_rates
    from edgekd.training_time import teacher_training_seconds

    config, data, cache = context.config, context.data, context.cache_dir
    size, classes = data.input_size, data.num_classes
    probed = _probed(context)

    def work() -> tuple[float | None, float | None]:
        task = context.observer.task(f"rate probe: {len(probed) + 2} models", len(probed) + 2)
        for a in probed:
            student_rates(
                a.candidate.arch,
                dict(a.candidate.kwargs),
                size,
                classes,
                config.training.batch_size,
                cache_dir=cache,
            )
            task.advance()
        seconds = teacher_training_seconds(config, data, _recipe(config), cache)
        task.advance()
        rate = None
        if teacher_arch is not None:
            rate = forward_rate(
                build_model(teacher_arch, classes), teacher_arch, size, cache_dir=cache
            )  # an untrained copy: the rate does not depend on the weights
        task.advance()
        task.close()
        return seconds, rate

    return _timed(context, "rate probe", work)


def _teacher_row(context, seconds: float | None) -> StageEstimate:
    recipe = _recipe(context.config)
    load = rule("teacher load")
    if seconds:
        basis = (
            f"{recipe.arch}: {recipe.epochs} epochs x {len(context.data.train):,} images at its measured "
            f"rate + rule {load:g} s to test it"
        )
        return StageEstimate("teacher", "", seconds + load, basis)
    why = "cached" if seconds == 0 else "the given teacher"
    return StageEstimate("teacher", "", load, f"{why}: {stated('teacher load')}")


def _training_rows(context, teacher_seconds: float | None, teacher_rate: float | None) -> list[StageEstimate]:
    """The search and the final distillation from the training plan (`plan_fit`, at the rates just
    measured), and the stages after training (`context.shipping_estimates`)."""
    from edgekd.training_time import plan_fit

    config, data = context.config, context.data
    timing = None
    if teacher_rate is not None:
        spent = time.perf_counter() - context.started + (teacher_seconds or 0.0)
        try:
            timing = plan_fit(
                config,
                context.assessments,
                None,
                _teacher_arch(config, _recipe(config)) or "teacher",
                data,
                make_train_config(config, data.input_size),
                context.plan,
                context.cache_dir,
                spent=spent,
                teacher_seconds=teacher_seconds,
                teacher_rate=teacher_rate,
                announce=False,
                confirm=confirms_in_full(config, len(data.train), context.plan),
            )
        except ConfigError as e:  # a time budget too small: the plan after the teacher says so again
            log.debug("the plan could not estimate the training under the time budget: %s", e)
    if timing is None:
        later = "estimated once the teacher is loaded (the training plan after it)"
        rows = [StageEstimate("search", "", None, later), StageEstimate("distill", "", None, later)]
        student_rate = None
    else:
        rows, student_rate = _search_and_final(context, timing)
    if config.baseline == "scratch":
        rows.append(StageEstimate("baseline", "", None, "counted in distill's estimate"))
    if context.shipping_estimates is not None:
        rows += context.shipping_estimates(context, student_rate, teacher_seconds == 0)
    return rows


def training_rows_open(estimates) -> bool:
    """Whether the plan of every stage left the search and the final training unestimated (a given
    teacher's forward rate is unknown until it is loaded)."""
    return any(row.stage in ("search", "distill") and row.seconds is None for row in estimates)


def with_training_rows(context, timing) -> list:
    """The plan's rows with its open search and distill rows filled from `timing`, the plan made once
    the teacher was loaded, so that the comparison after the run has an estimate for each."""
    filled = {row.stage: row for row in _search_and_final(context, timing)[0]}
    return [filled.get(row.stage, row) if row.seconds is None else row for row in context.estimates]


def _search_and_final(context, timing) -> tuple[list[StageEstimate], float | None]:
    data = context.data
    if timing.mode == "confirm":
        low, high = timing.predicted_search_range
        search = StageEstimate(
            "search",
            "",
            timing.predicted_search,
            f"full trainings ({timing.epochs} epochs x {len(data.train):,} images) fastest first at measured "
            f"rates until one keeps --min-retention: {duration(low)} (the first) - {duration(high)} "
            f"(all {len(timing.entering)}), counted at their geometric middle",
        )
    elif timing.entering:
        rungs = " + ".join(f"{r.candidates}x{r.epochs}x{r.images}" for r in timing.rungs)
        low, high = timing.predicted_search_range
        search = StageEstimate(
            "search",
            "",
            timing.predicted_search,
            f"rungs {rungs} (candidates x epochs x images) at measured rates; "
            f"{duration(low)} - {duration(high)} by who goes on",
        )
    else:
        search = StageEstimate("search", "", 0.0, "no trials")
    final = timing.predicted_final
    if timing.mode == "confirm":
        distill = StageEstimate("distill", "", 0.0, "the search's full training is the final student")
        return [search, distill], _mean_rate(context, final)
    qat = f" + {context.plan.qat_epochs} quantization-aware" if context.plan.qat_epochs else ""
    low, high = timing.final_range() if final else (0.0, 0.0)
    distill = StageEstimate(
        "distill",
        "",
        statistics.fmean(final.values()) if final else None,
        f"{timing.epochs}{qat} epochs x {len(data.train):,} images at measured rates; "
        f"{duration(low)} - {duration(high)} by the student chosen",
    )
    return [search, distill], _mean_rate(context, final)


def _mean_rate(context, names) -> float | None:
    """The mean evaluation rate (images/s) of the candidates `names`, for the stages after training."""
    from edgekd.training_rates import student_rates

    config, data = context.config, context.data
    by_name = {a.candidate.name: a.candidate for a in context.assessments}
    rates = [
        student_rates(
            by_name[n].arch,
            dict(by_name[n].kwargs),
            data.input_size,
            data.num_classes,
            config.training.batch_size,
            cache_dir=context.cache_dir,
        ).evaluate
        for n in names
    ]
    return statistics.fmean(rates) if rates else None
