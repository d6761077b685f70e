"""What a fit's training will cost in wall time, said before it is spent, and `--time-budget`.

Every candidate's training and evaluation rates, and the teacher's forward rate, are measured once per
machine and cached (`edgekd.training_rates`, which also turns rates into seconds). From them and the
rungs successive halving will run, `plan_fit` predicts the search's seconds and the final distillation's
(a range over the candidates that can still be chosen), logs both as one table before any student
trains, and, under a time budget, splits it:

- the teacher's training (when it is not cached) is spent first and counted against the budget;
- candidates whose final training alone cannot fit what is left are dropped, named in the log;
- when not even the fastest one can train its epochs in it, the final epochs are cut (or, below one
  epoch, the fit is refused);
- the final training keeps what the slowest candidate that may be chosen needs; the search gets at most
  the rest, and at most `SEARCH_SHARE` of what is left, as its wall-clock budget, with as many entering
  candidates as are predicted to fit it (none: the choice is made without trials).

Example:
    >>> from edgekd.training_time import parse_duration
    >>> parse_duration("1.5h")  # --time-budget, in seconds
    5400.0
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import ConfigError
from edgekd.training_rates import (
    FinalRecipe,
    Rates,
    Workload,
    final_seconds,
    forward_rate,
    per_epoch_and_fixed,
    search_seconds,
    student_rates,
)

# Not used here: callers read a candidate's training rate from this module.
from edgekd.training_rates import training_rate as training_rate

if TYPE_CHECKING:
    import torch.nn as nn

log = logging.getLogger(__name__)

# The search's share of the time left after the teacher, at most: the final training is what ships.
SEARCH_SHARE = 0.3
# A search rung trains on at least this many images for at least this many optimizer steps (as far as
# the search's epochs allow, which rise on small data to allow it: `search_rungs`): a fresh network
# scores near chance after a few dozen steps, and a rung of chance scores ranks nothing. On digits
# (1,259 images, batch 16) trials of 62-158 steps scored 9-24 % against 10 % chance.
SEARCH_MIN_IMAGES, SEARCH_MIN_STEPS = 1000, 250


def search_rungs(config, epochs: int, train_images: int) -> dict[str, int]:
    """`plan_rungs`' limits for a fit (`config`, its `FitConfig`) of `epochs` on `train_images` (batch
    decided): the full trial budget's epochs (`--search-epochs`, else half the fit's, raised on small
    data until a rung reaches SEARCH_MIN_STEPS, never past the fit's epochs) and images, and each
    rung's floors. Half the fit's epochs on all its images makes the last rung a sixth of the final
    training (eta = 3): on EuroSAT at 6,000 images and 8 epochs, rungs of 2 and 3 epochs on 1,000
    images ranked the 8 oracle students with Spearman 0.24 against their full trainings and chose one
    1.2 points below the best (benchmarks/results/search_eurosat-small-rungs.json). Here because the time
    plan predicts the search from the same rungs the fit runs, and the plan stands below the fit's
    modules (`edgekd.fit_recipe` imports it)."""
    max_images = min(config.search_images or train_images, train_images)
    least = SEARCH_MIN_STEPS * config.training.batch_size
    max_epochs = config.search_epochs or min(
        epochs, max(math.ceil(epochs / 2), math.ceil(least / max_images))
    )
    return {
        "max_epochs": max_epochs,
        "max_images": max_images,
        "min_images": min(SEARCH_MIN_IMAGES, max_images),
        "min_images_seen": least,
    }


def parse_duration(text: str, option: str = "--time-budget") -> float:
    """`20m`, `90s`, `1.5h` as seconds, read by the search budget's parser (`parse_budget`); anything
    else (a bare number, 0, a negative or unreadable value) is a ConfigError naming `option`."""
    from edgekd.search.halving import parse_budget

    wrong = ConfigError(
        f"{option} {text!r} is not a duration: give a positive number with a unit, e.g. 90s, 20m or 1.5h."
    )
    try:
        budget = parse_budget(str(text))
    except ConfigError as e:
        raise wrong from e
    if budget.seconds is None:
        raise wrong
    return budget.seconds


def teacher_training_seconds(config, data, recipe, cache_dir: Path) -> float | None:
    """Predicted seconds of training the teacher in this fit, 0 when a cached one will be reused, None
    when the teacher is the user's own (a file, or timm weights that may fit as they are)."""
    from edgekd.teachers import cached_teacher_path, fine_tune_recipe

    if config.teacher is None:
        start_id = None
    elif config.teacher_weights is None and not Path(config.teacher).exists() and "." not in config.teacher:
        start_id = f"timm-hub:{config.teacher}"
        recipe = fine_tune_recipe(config.teacher, recipe)
    else:
        return None
    if cached_teacher_path(cache_dir, data, recipe, config.training.seed, start_id).exists():
        return 0.0
    rates = student_rates(
        recipe.arch, {}, data.input_size, data.num_classes, recipe.batch_size, cache_dir=cache_dir
    )
    n, val = len(data.train), len(data.val)
    # train()'s epochs and validation, then one more validation pass once it is trained
    return recipe.epochs * (n / rates.train + val / rates.evaluate) + val / rates.evaluate


def check_teacher_time(config, data, recipe, cache_dir: Path) -> float | None:
    """Before the teacher trains: its predicted seconds (logged), and under a time budget a
    ConfigError when they alone exceed it."""
    seconds = teacher_training_seconds(config, data, recipe, cache_dir)
    if seconds:
        log.info("teacher %s: %d epochs predicted to take %s", recipe.arch, recipe.epochs, _duration(seconds))
    if config.time_budget is not None and seconds:
        budget = parse_duration(config.time_budget)
        if seconds >= budget:
            raise ConfigError(
                f"--time-budget {config.time_budget}: training the teacher {recipe.arch} alone is predicted "
                f"to take {_duration(seconds)} ({recipe.epochs} epochs on {len(data.train)} images); give "
                "a larger budget, fewer --teacher-epochs, or a trained --teacher."
            )
    return seconds


# --- the plan ------------------------------------------------------------------------------------
@dataclass
class FitTiming:
    """The plan `plan_fit` made, what the fit should use because of it, and (after training) what the
    training actually took."""

    table: str
    predicted_search: float
    predicted_search_range: tuple[float, float]  # the fastest and the slowest candidates going on
    predicted_final: dict[str, float]  # candidate -> seconds of its final training
    entering: tuple[str, ...]
    assessments: list  # every candidate; ones dropped by the budget carry the reason
    search_assessments: list  # what the search chooses among
    search_budget: str  # the search budget to run with
    epochs: int
    teacher_seconds: float | None  # predicted; None: not trained here or not predicted
    spent_before: float  # seconds of the fit before the plan (decoding, teacher)
    budget_seconds: float | None
    search_share: float | None
    notes: tuple[str, ...] = ()
    rungs: tuple = ()
    # "confirm": full trainings fastest first (`edgekd.search.confirm`), the search's last one the final
    # student, so predicted_final is 0 and the search's range runs from one training to all of them.
    mode: str = "halving"

    def search_config(self, config):
        return config.with_options(search_budget=self.search_budget, epochs=self.epochs)

    def train_config(self, train_config):
        return dataclasses.replace(train_config, epochs=self.epochs)

    def final_range(self) -> tuple[float, float]:
        """The final training's predicted seconds, fastest to slowest of the candidates that may win."""
        return min(self.predicted_final.values()), max(self.predicted_final.values())

    def outcome(self, chosen: str, search_actual: float, final_actual: float) -> dict[str, Any]:
        """`result.json["plan"]`, and a log line of predicted against actual."""
        predicted = self.predicted_final.get(chosen)
        record = {
            "time_budget_s": self.budget_seconds,
            "spent_before_search_s": round(self.spent_before, 1),
            "teacher_predicted_s": None if self.teacher_seconds is None else round(self.teacher_seconds, 1),
            "entering": list(self.entering),
            "rungs": [dataclasses.asdict(r) for r in self.rungs],
            "search_budget": self.search_budget,
            "epochs": self.epochs,
            "search": {
                "predicted_s": round(self.predicted_search, 1),
                "predicted_range_s": [round(x, 1) for x in self.predicted_search_range],
                "actual_s": round(search_actual, 1),
            },
            "final": {
                "candidate": chosen,
                "predicted_s": None if predicted is None else round(predicted, 1),
                "predicted_range_s": [round(x, 1) for x in self.final_range()]
                if self.predicted_final
                else None,
                "actual_s": round(final_actual, 1),
            },
            "notes": list(self.notes),
        }
        log.info(
            "training time: search predicted %s, took %s; final training of %s predicted %s, took %s",
            _duration(self.predicted_search),
            _duration(search_actual),
            chosen,
            "?" if predicted is None else _duration(predicted),
            _duration(final_actual),
        )
        return record


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _span(low: float, high: float) -> str:
    return (
        _duration(low) if math.isclose(low, high, rel_tol=0.05) else f"{_duration(low)} - {_duration(high)}"
    )


def _marked_out(assessment, reason: str):
    """`assessment` no longer feasible, `reason` added to its reasons on each target."""
    per_target = {
        name: dataclasses.replace(a, reasons=(*a.reasons, reason))
        for name, a in assessment.per_target.items()
    }
    return dataclasses.replace(assessment, per_target=per_target)


def plan_fit(
    config,
    assessments: Sequence,
    teacher: nn.Module,
    teacher_name: str,
    data,
    train_config,
    plan,
    cache_dir: Path,
    *,
    spent: float = 0.0,
    teacher_seconds: float | None = None,
    teacher_rate: float | None = None,
    announce: bool = True,
    confirm: bool = False,
) -> FitTiming:
    """The fit's training plan (see the module's docstring): rates measured (or read from the cache)
    for the candidates that may be chosen, the search's and the final training's predicted seconds,
    and under `config.time_budget` the split, the dropped candidates and the epochs. Logs the table.
    `spent`: seconds the fit has already run (decoding, the teacher), counted against the budget.
    `teacher_rate` (images/s) stands in for timing `teacher`'s forward, before the teacher exists (the
    fit's plan of every stage, `edgekd.stage_plan`); `announce` False logs the table at debug level.
    `confirm` (small data, the retention objective, no time budget: `fit_recipe.confirms_in_full`)
    plans the search as full trainings, fastest first (`edgekd.search.confirm`)."""
    from edgekd.search.confirm import confirmations
    from edgekd.search.halving import parse_budget, plan_rungs
    from edgekd.search.ranking import capacity, entrants, entry_order, most_capacity
    from edgekd.streaming import is_streamed

    n_train, n_val = len(data.train), len(data.val)
    augmentation = train_config.augmentation
    work = Workload(
        val_images=n_val,
        views=augmentation.draws if augmentation is not None else 1,
        # streamed views are fresh, so the teacher runs on every batch (edgekd.streaming), as it does
        # for a loss that reads its maps or embeddings
        teacher_cache=plan.caches_teacher and plan.scheme != "online" and not is_streamed(data.train),
        teacher_rate=teacher_rate
        if teacher_rate is not None
        else forward_rate(teacher, teacher_name, data.input_size, cache_dir=cache_dir),
    )
    user_budget = parse_budget(config.search_budget)
    budget = parse_duration(config.time_budget) if config.time_budget is not None else None
    left = None if budget is None else budget - spent
    feasible = [a for a in assessments if a.feasible]
    ordered = entry_order(feasible) if len(feasible) > 1 else list(feasible)
    # The order select_student takes candidates in: by entry order, or by MACs when no trial runs.
    if user_budget.trials == 0:
        ordered = sorted(feasible, key=capacity, reverse=True)
    wanted = None if user_budget.trials is None else max(1, user_budget.trials)
    rates: dict[str, Rates] = {}

    def measured(a) -> str:
        rates[a.candidate.name] = student_rates(
            a.candidate.arch,
            dict(a.candidate.kwargs),
            data.input_size,
            data.num_classes,
            config.training.batch_size,
            cache_dir=cache_dir,
        )
        return a.candidate.name

    def rungs_for(count: int, epochs: int):
        return plan_rungs(count, eta=3, **search_rungs(config, epochs, n_train))

    def recipe(epochs: int, rungs) -> FinalRecipe:
        return FinalRecipe(
            epochs=epochs,
            qat_epochs=plan.qat_epochs,
            images=n_train,
            generations=2 if plan.scheme == "born-again" else 1,
            baseline=config.baseline == "scratch",
            cache_filled_by_search=any(r.images == n_train for r in rungs),
        )

    notes: list[str] = []
    if plan.scheme in ("online", "assistant"):
        notes.append(
            f"--scheme {plan.scheme} also trains "
            f"{'a copy of the teacher' if plan.scheme == 'online' else 'an assistant'}: "
            "the final training's prediction counts the student alone"
        )
    epochs = config.training.epochs
    dropped: dict[str, float] = {}
    by_name = {a.candidate.name: a for a in assessments}

    def final_for(names, epochs, rungs) -> dict[str, float]:
        return {n: final_seconds(rates[n], work, recipe(epochs, rungs)) for n in names}

    if confirm:  # as confirm_student trains them: fastest first, up to its cap, then the reference
        names = [measured(a) for a in confirmations(feasible, user_budget)]
        each = final_for(names, epochs, ())
        first, every = (each[names[0]], sum(each.values())) if names else (0.0, 0.0)
        timing = FitTiming(
            table="",
            # how many are trained is decided by their results: the geometric middle of the first alone
            # and all of them keeps either outcome within 2x of the figure (1.73x for a cap of 3)
            predicted_search=math.sqrt(first * every),
            predicted_search_range=(first, every),
            predicted_final=dict.fromkeys(names, 0.0),
            entering=tuple(names),
            assessments=list(assessments),
            search_assessments=list(assessments),
            search_budget=config.search_budget,
            epochs=epochs,
            teacher_seconds=teacher_seconds,
            spent_before=spent,
            budget_seconds=None,
            search_share=None,
            notes=tuple(notes),
            mode="confirm",
        )
        timing.table = _table(timing, rates, n_train)
        log.log(logging.INFO if announce else logging.DEBUG, "%s", timing.table)
        return timing
    if left is None:  # as select_student takes them, the last slot kept for the most capable
        kept = [measured(a) for a in entrants(ordered, wanted)]
    else:
        if left <= 0:
            raise ConfigError(
                f"--time-budget {config.time_budget} is spent before the search: decoding the data and the "
                f"teacher took {_duration(spent)}; give a larger budget."
            )
        # Timed in the order they would enter, until as many fit as may enter: a candidate that cannot
        # fit is dropped and the next one takes its place.
        kept = []
        for a in ordered:
            name = measured(a)
            alone = final_for([name], epochs, ())[name]
            if alone > left:
                dropped[name] = alone
            else:
                kept.append(name)
            if wanted is not None and len(kept) >= wanted:
                break
        if not kept and dropped:
            fastest = min(dropped, key=dropped.get)
            per_epoch, fixed = per_epoch_and_fixed(rates[fastest], work, recipe(1, ()))
            epochs = math.floor((left - fixed) / per_epoch) if per_epoch > 0 else 0
            if epochs < 1:
                raise ConfigError(
                    f"--time-budget {config.time_budget}: not even the fastest candidate, {fastest}, can "
                    f"train one epoch in the {_duration(left)} left (one epoch: "
                    f"{_duration(fixed + per_epoch)}); give a larger budget or fewer training images."
                )
            note = (
                f"--time-budget {config.time_budget} leaves {_duration(left)}: the fastest candidate, "
                f"{fastest}, trains {epochs} of the {config.training.epochs} epochs in it, so the final "
                f"training runs {epochs} epochs"
            )
            log.warning("%s", note)
            notes.append(note)
            shorter = final_for(list(dropped), epochs, ())
            kept = [n for n in dropped if shorter[n] <= left][:wanted]
            dropped = {n: s for n, s in shorter.items() if n not in kept}
        if dropped:
            log.warning(
                "--time-budget %s: dropped %s: its final training alone is predicted not to fit the %s left",
                config.time_budget,
                ", ".join(f"{name} ({_duration(seconds)})" for name, seconds in dropped.items()),
                _duration(left),
            )
            for name, seconds in dropped.items():
                by_name[name] = _marked_out(
                    by_name[name],
                    f"its final training ({_duration(seconds)} predicted) does not fit --time-budget "
                    f"{config.time_budget}",
                )
    marked = [by_name[a.candidate.name] for a in assessments]
    if len(kept) > 1 and user_budget.trials != 0:  # the order the search enters them in
        kept = [a.candidate.name for a in entry_order([by_name[n] for n in kept])]

    # Who enters the search, and with what budget.
    trials = len(kept) if user_budget.trials is None else min(user_budget.trials, len(kept))
    search_budget, share = config.search_budget, None
    entering: list[str] = kept[:trials] if trials > 1 else []
    if left is not None:
        entering = []
        for count in range(trials, 1, -1):
            names = kept[:count]
            rungs = rungs_for(count, epochs)
            final = final_for(names, epochs, rungs)
            share = min(left - max(final.values()), SEARCH_SHARE * left)
            if user_budget.seconds is not None:
                share = min(share, user_budget.seconds)
            if search_seconds(rungs, names, rates, work) <= share:
                entering = names
                break
        if entering:
            search_budget = f"{share:.0f}s"
        else:
            search_budget, share = "0", 0.0
            if trials > 1:
                notes.append(
                    f"no search: two trials are predicted not to fit the search's share of --time-budget "
                    f"{config.time_budget}"
                )
    rungs = rungs_for(len(entering), epochs) if entering else []
    predicted_search = search_seconds(rungs, entering, rates, work) if entering else 0.0
    search_range = tuple(
        search_seconds(rungs, entering, rates, work, survivors) if entering else 0.0
        for survivors in ("fastest", "slowest")
    )
    if entering:
        choosable = entering
    elif not kept:
        choosable = []
    elif search_budget.strip() == "0":  # no trials: select_student takes the one with the most MACs
        choosable = [most_capacity([by_name[n] for n in kept]).candidate.name]
    else:  # one trial or one candidate: the first to enter, chosen without training
        choosable = kept[:1]
    predicted_final = final_for(choosable, epochs, rungs)
    # Under a budget the search enters exactly the candidates that fit its share, with its seconds,
    # or without trials chooses among those whose final training fits.
    search_assessments = marked if left is None or not kept else [by_name[n] for n in (entering or kept)]
    timing = FitTiming(
        table="",
        predicted_search=predicted_search,
        predicted_search_range=search_range,
        predicted_final=predicted_final,
        entering=tuple(entering),
        assessments=marked,
        search_assessments=search_assessments,
        search_budget=search_budget,
        epochs=epochs,
        teacher_seconds=teacher_seconds,
        spent_before=spent,
        budget_seconds=budget,
        search_share=share,
        notes=tuple(notes),
        rungs=tuple(rungs),
    )
    timing.table = _table(timing, rates, n_train)
    log.log(logging.INFO if announce else logging.DEBUG, "%s", timing.table)
    return timing


def _table(timing: FitTiming, rates: dict[str, Rates], n_train: int) -> str:
    """The plan as aligned text: one log record, read before anything trains."""
    rows: list[tuple[str, str]] = []
    if timing.budget_seconds is not None:
        rows.append(
            (
                "time budget",
                f"{_duration(timing.budget_seconds)}; "
                f"{_duration(timing.spent_before)} spent before the search",
            )
        )
    if timing.teacher_seconds:
        rows.append(("teacher training", f"{_duration(timing.teacher_seconds)} predicted"))
    names = timing.entering or tuple(timing.predicted_final)
    rows.append(
        (
            "candidates",
            ", ".join(f"{n} ({rates[n].train:.0f} img/s)" for n in names) or "none",
        )
    )
    if timing.mode == "confirm" and timing.entering:
        low, high = timing.predicted_search_range
        rows.append(
            (
                "search",
                f"{_span(low, high)} predicted: full trainings ({timing.epochs} epochs x {n_train} images), "
                f"fastest first (the last slot kept for a capable reference), up to "
                f"{len(timing.entering)}, until one keeps --min-retention",
            )
        )
        rows.append(("final training", "none: the search's full training is the final student"))
    elif timing.entering:
        rungs = " + ".join(f"{r.candidates}x{r.epochs}x{r.images}" for r in timing.rungs)
        rows.append(("trial budget", f"{rungs} (candidates x epochs x images)"))
        low, high = timing.predicted_search_range
        spread = [] if math.isclose(low, high, rel_tol=0.05) else [f"{_span(low, high)} by who goes on"]
        share = [] if timing.search_share is None else [f"budget {_duration(timing.search_share)}"]
        detail = f" ({'; '.join(spread + share)})" if spread or share else ""
        rows.append(("search", f"{_duration(timing.predicted_search)} predicted{detail}"))
    else:
        rows.append(("search", "none: no trials"))
    if timing.mode != "confirm":
        low, high = timing.final_range() if timing.predicted_final else (0.0, 0.0)
        rows.append(
            ("final training", f"{_span(low, high)} predicted ({timing.epochs} epochs x {n_train} images)")
        )
    rows += [("note", note) for note in timing.notes]
    width = max(len(k) for k, _ in rows)
    return "training plan:\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def report_line(plan: dict[str, Any] | None) -> tuple[str, ...]:
    """The report's sentence on predicted against actual training time."""
    if not plan:
        return ()
    search, final = plan["search"], plan["final"]
    predicted = final["predicted_s"]
    budget = (
        f" under a time budget of {_duration(plan['time_budget_s'])}" if plan.get("time_budget_s") else ""
    )
    return (
        f"Training time{budget}: the search was predicted to take {_duration(search['predicted_s'])} "
        f"and took {_duration(search['actual_s'])}; the final training of {final['candidate']} was "
        f"predicted to take {'?' if predicted is None else _duration(predicted)} and took "
        f"{_duration(final['actual_s'])}.",
    )
