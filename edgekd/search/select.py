"""Choosing the student by evidence: the feasible candidates enter successive halving (`halving`)
in the order of their ImageNet prior per unit of predicted latency, each rung is ranked by the
user's objective, and the whole search (every trial, its cost, the Pareto front, the reason) is one
`SearchResult` that `fit` saves as `search.json`, so a resumed run does not search again.

The order candidates enter in and the objectives each rung is ranked by are `edgekd.search.ranking`'s.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekd._io import atomic_path
from edgekd.errors import NoFeasibleStudentError
from edgekd.search.constraints import CandidateAssessment, latency_phrase
from edgekd.search.halving import (
    Budget,
    RungPlan,
    Trial,
    TrialTotals,
    ValidationScore,
    plan_rungs,
    successive_halving,
)
from edgekd.search.pareto import front
from edgekd.search.ranking import (
    DEFAULT_MIN_RETENTION,
    OBJECTIVES,
    check_objective,
    entrants,
    entry_order,
    evidence_front,
    has_intervals,
    latency_load,
    most_capacity,
    passes_bar,
    prior_key,
    prior_per_latency,
    rank_rung,
    speed_key,
    tie_group,
)

# What callers import from here: this module's own, and the ranking's names they used to find here.
__all__ = [
    "DEFAULT_MIN_RETENTION",
    "OBJECTIVES",
    "SearchResult",
    "check_objective",
    "entrants",
    "entry_order",
    "latency_load",
    "prior_per_latency",
    "select_student",
    "write_search_csv",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult(TrialTotals):
    chosen: str  # the candidate's name
    reason: str  # one sentence for the report
    trials: tuple[Trial, ...] = ()  # empty: chosen without evidence (one candidate, or budget 0)
    entered: tuple[str, ...] = ()  # candidates that entered the first rung, in entry order
    # Feasible candidates on the search's `front`: by first-rung accuracy after trials, by MACs (the
    # front `edgekd search` marks) when chosen without them, none when the trials stayed at chance.
    front: tuple[str, ...] = ()
    stopped_early: bool = False  # the time budget ran out before the last planned rung
    # The rule the choice followed; a search.json from before objectives chose by accuracy.
    objective: str = "accuracy"
    min_retention: float | None = None  # the retention objective's floor
    chance: float | None = None  # the largest class's share of the validation labels
    at_chance: bool = False  # the trials stayed at chance: chosen by prior per latency instead
    # "halving", or "confirm": full trainings fastest first on small data (`edgekd.search.confirm`),
    # whose trials are the final recipe's and whose chosen one's weights are the final student.
    mode: str = "halving"
    teacher_val_accuracy: float | None = None  # what a confirmation's retention is measured against

    def accuracies(self, name: str) -> list[float | None]:
        """`name`'s validation accuracy at each rung (None where it did not run; a retried rung: the
        retry's)."""
        return [t.score if t else None for t in self.trials_of(name)]

    def trials_of(self, name: str) -> list[Trial | None]:
        """`name`'s trial at each rung, as `accuracies` picks them."""
        picked: list[Trial | None] = [None] * self.rungs
        for t in self.trials:  # in run order: a retry comes after the attempt it replaces
            if t.name == name:
                picked[t.rung] = t
        return picked

    def to_json(self) -> dict:
        return {**asdict(self), "seconds": self.seconds, "mac_images": self.mac_images}

    @classmethod
    def from_json(cls, data: dict) -> SearchResult:
        """The record `to_json` wrote, also one written before the evidence's intervals and the
        objective were recorded (a run resumed from an older version): what it lacks takes the
        defaults of that version, whose only rule was accuracy."""
        return cls(
            chosen=data["chosen"],
            reason=data["reason"],
            trials=tuple(Trial(**t) for t in data["trials"]),
            entered=tuple(data["entered"]),
            front=tuple(data["front"]),
            stopped_early=data["stopped_early"],
            objective=data.get("objective", "accuracy"),
            min_retention=data.get("min_retention"),
            chance=data.get("chance"),
            at_chance=data.get("at_chance", False),
            mode=data.get("mode", "halving"),
            teacher_val_accuracy=data.get("teacher_val_accuracy"),
        )


def select_student(
    assessments: Sequence[CandidateAssessment],
    evaluate: Callable[[str, RungPlan], ValidationScore | float],
    *,
    budget: Budget,
    max_epochs: int,
    max_images: int,
    target_name: str,
    eta: int = 3,
    min_images: int = 64,
    min_images_seen: int = 0,
    objective: str = "accuracy",
    min_retention: float = DEFAULT_MIN_RETENTION,
    chance: float | None = None,
    available_images: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> SearchResult:
    """Rank the feasible candidates by short distillation runs (`evaluate`) and pick the first by
    `objective` (`fit` passes the user's, whose default is retention; this function's default is the
    plain accuracy rule its earlier callers had). A trial budget of 0, or a single feasible
    candidate, chooses without training: the candidate with the most MACs (the most capacity the
    target affords). `chance` (the largest class's share of the validation labels) turns on the
    chance check (`successive_halving`); trials still at chance after a longer re-run leave the
    choice to the ImageNet prior per unit latency. `clock` times the trials and the budget (under
    torchrun, rank 0's: `edgekd.distill.distributed.main_clock`)."""
    check_objective(objective, min_retention)
    feasible = [a for a in assessments if a.feasible]
    if not feasible:
        details = "; ".join(f"{a.candidate.name}: {', '.join(a.reasons)}" for a in assessments)
        raise NoFeasibleStudentError(f"no candidate fits {target_name}'s budgets ({details}).")
    by_name = {a.candidate.name: a for a in feasible}
    ordered = entry_order(feasible)
    entering = entrants(ordered, budget.trials)
    recorded = {
        "objective": objective,
        "min_retention": min_retention if objective == "retention" else None,
        "chance": chance,
    }
    if len(entering) <= 1:
        pick = most_capacity(feasible) if not entering else entering[0]
        why = (
            "the only feasible candidate"
            if len(feasible) == 1
            else f"no search trials, so no evidence for objective {objective}: most MACs"
        )
        return SearchResult(
            pick.candidate.name,
            f"{pick.candidate.name} ({why}; {len(feasible)} of {len(assessments)} candidates fit "
            f"{target_name}) {latency_phrase(pick)}.",
            front=tuple(a.candidate.name for a in front(feasible)),
            **recorded,
        )
    names = [a.candidate.name for a in entering]
    rungs = plan_rungs(
        len(names),
        eta=eta,
        max_epochs=max_epochs,
        max_images=max_images,
        min_images=min(min_images, max_images),
        min_images_seen=min_images_seen,
    )
    halving = successive_halving(
        names,
        evaluate,
        rungs,
        macs={a.candidate.name: a.macs for a in entering},
        budget=Budget(seconds=budget.seconds),
        rank=lambda trials: rank_rung(trials, by_name, objective, min_retention, chance),
        chance=chance,
        available_images=available_images,
        clock=clock,
    )
    searched = (
        f"successive halving over {len(names)} of the {len(feasible)} candidates that fit {target_name}"
        f"{' (the time budget stopped it early)' if halving.stopped_early else ''}; search "
        f"{halving.seconds:.0f} s"
    )
    if halving.at_chance:
        pick, reason = _chosen_by_prior(feasible, halving, chance, searched)
        reason = f"Objective {objective}: {reason}"
        log.warning("search: %s", reason)
        return SearchResult(
            pick, reason, halving.trials, tuple(names), (), halving.stopped_early, **recorded, at_chance=True
        )
    reason = _reason(halving, by_name, objective, min_retention, chance, searched)
    return SearchResult(
        halving.winner,
        reason,
        halving.trials,
        tuple(names),
        evidence_front(feasible, halving.trials),
        halving.stopped_early,
        **recorded,
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def evidence_phrase(t: Trial) -> str:
    """A score with its precision: "91.2 %, 95 % CI 89.0–93.0 %, 300 images" (the score alone when
    the trial gave no image count)."""
    if t.ci_low is None or t.ci_high is None or not t.val_images:
        return _pct(t.score)
    return f"{_pct(t.score)}, 95 % CI {100 * t.ci_low:.1f}–{100 * t.ci_high:.1f} %, {t.val_images} images"


def _budget_phrase(t: Trial) -> str:
    return f"{t.epochs} epoch{'s' if t.epochs != 1 else ''} on {t.images} training images"


def _deciding_rung(halving: TrialTotals) -> int:
    """The last rung that compared candidates (a search of one candidate: its only rung)."""
    return max((r for r in range(halving.rungs) if len(halving.rung(r)) > 1), default=halving.rungs - 1)


def _reason(halving, by_name, objective: str, min_retention: float, chance, searched: str) -> str:
    """One sentence: the objective, the evidence the choice rests on (score, interval, images, the
    rung's budget) and the chosen candidate's latency."""
    d = _deciding_rung(halving)
    trials = halving.rung(d)
    mine = next(t for t in trials if t.name == halving.winner)
    best = max(trials, key=lambda t: t.score)
    winner = by_name[halving.winner]
    tail = f" ({searched}), and {latency_phrase(winner)}."
    rung = f"rung {d + 1} ({_budget_phrase(best)})"
    if objective != "accuracy":
        if not has_intervals(trials):
            fallback = "the trials gave no validation image count, so the noise in their scores is unknown"
            return (
                f"Objective {objective}: {fallback}; falling back to the most accurate: "
                + _accuracy_words(trials, mine, by_name, rung, tail)
            )
        if not passes_bar(objective, mine, best.score, min_retention, chance):
            bar = (
                f"keeps {100 * min_retention:g} % of the best"
                if objective == "retention"
                else f"is clearly above chance ({_pct(chance)})"
            )
            return (
                f"Objective {objective}: no candidate's accuracy {bar} in {rung}; falling back to the "
                "most accurate: " + _accuracy_words(trials, mine, by_name, rung, tail)
            )
    if objective == "retention" and mine.name == best.name:
        return (
            f"Objective retention: {mine.name} is both the fastest candidate shown to keep "
            f"{100 * min_retention:g} % of the best and the best itself in {rung}: validation accuracy "
            f"{evidence_phrase(mine)}{_not_shown(trials, by_name, mine, min_retention * best.score)}{tail}"
        )
    if objective == "retention":
        return (
            f"Objective retention: {mine.name} is the fastest candidate shown to keep "
            f"{100 * min_retention:g} % of the best in rung {d + 1} ({best.name}, {_pct(best.score)}; "
            f"{_budget_phrase(best)}): its validation accuracy ({evidence_phrase(mine)}) reaches "
            f"{_pct(min_retention * best.score)} even at the low end of its interval"
            f"{_not_shown(trials, by_name, mine, min_retention * best.score)}{tail}"
        )
    if objective == "latency":
        above = (
            f"clearly above chance ({_pct(chance)}, the largest class's share)"
            if chance is not None
            else "scored (the chance level is unknown)"
        )
        return (
            f"Objective latency: {mine.name} is the fastest candidate whose validation accuracy "
            f"({evidence_phrase(mine)}) is {above} in {rung}{tail}"
        )
    return "Objective accuracy: " + _accuracy_words(trials, mine, by_name, rung, tail)


def _not_shown(trials, by_name, mine: Trial, bar: float) -> str:
    """The faster candidates the retention bar turned down, the closest to it named: how near a faster
    student came, for a reader who would trade a little accuracy for speed."""
    faster = [t for t in trials if speed_key(by_name[t.name]) < speed_key(by_name[mine.name])]
    if not faster:
        return ""
    closest = max(faster, key=lambda t: t.interval[0])
    others = f" and {len(faster) - 1} more" if len(faster) > 1 else ""
    return f"; faster, not shown to keep {_pct(bar)}: {closest.name} ({evidence_phrase(closest)}){others}"


def _accuracy_words(trials, mine: Trial, by_name, rung: str, tail: str) -> str:
    """The accuracy rule's account of `mine`: the best score, or tied with it and first by prior."""
    tied = [t for t in tie_group(trials) if t.name != mine.name]
    if not tied:
        return f"{mine.name} had the best validation accuracy ({evidence_phrase(mine)}) in {rung}{tail}"
    others = ", ".join(f"{t.name} {_pct(t.score)}" for t in tied)
    chosen = by_name[mine.name]
    if prior_per_latency(chosen) is not None:
        why = f"has the most ImageNet top-1 per unit latency ({chosen.candidate.imagenet_top1:g} % top-1)"
    else:
        why = "is the fastest"
    return (
        f"{mine.name}'s validation accuracy ({evidence_phrase(mine)}) in {rung} is tied within the "
        f"noise (overlapping 95 % intervals) with {others}, and of those it {why}{tail}"
    )


def _chosen_by_prior(
    feasible: Sequence[CandidateAssessment], halving, chance: float, searched: str
) -> tuple[str, str]:
    """The choice when the trials stayed at chance: the feasible candidate with the most ImageNet
    top-1 per unit latency (none with a prior: the most MACs), and the sentence that says so."""
    retried = halving.rung(0)
    first = next(t for t in halving.trials if t.rung == 0 and not t.retry)
    best = max(retried, key=lambda t: t.score)
    low, high = best.interval
    images = " and images" if retried[0].images > first.images else ""
    stayed = (
        f"trial scores stayed at chance (best {_pct(best.score)}, CI {100 * low:.1f}–{100 * high:.1f} %, "
        f"chance {_pct(chance)}) after the first rung ran again with twice the epochs{images} ({searched}), "
        "so the search was abandoned"
    )
    with_prior = [a for a in feasible if prior_per_latency(a) is not None]
    if not with_prior:
        pick = most_capacity(feasible)
        return pick.candidate.name, (
            f"{stayed}; no feasible candidate has an ImageNet prior, so {pick.candidate.name} has the most "
            f"MACs and {latency_phrase(pick)}."
        )
    pick = min(with_prior, key=prior_key)
    c = pick.candidate
    return c.name, (
        f"{stayed}; {c.name} chosen by ImageNet prior per unit latency ({c.imagenet_top1:g} % top-1 at "
        f"{c.imagenet_size} px), and {latency_phrase(pick)}."
    )


def write_search_csv(path: Path, assessments: Sequence[CandidateAssessment], search: SearchResult) -> None:
    """Every candidate: its cost on the target, whether it fits and why not, its validation accuracy
    at each rung it ran with its Wilson 95 % interval and its top-1 agreement with the teacher, its
    share of the search's cost, and whether it is on the front or chosen.
    With several targets the per-target figures get a column per target (`predicted_latency_ms@pi5`)
    and `model_mb`/`peak_memory_mb` are the largest any target needs."""
    rungs = search.rungs
    names = list(assessments[0].per_target) if assessments else []
    per_target = [
        column if len(names) == 1 else f"{column}@{t}"
        for column in ("predicted_latency_ms", "budget_ms")
        for t in names
    ]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "arch",
                "input_size",
                "params",
                "macs",
                *per_target,
                "model_mb",
                "peak_memory_mb",
                "fallback_ops",
                "feasible",
                "reasons",
                *(
                    f"rung{r}_{column}"
                    for r in range(rungs)
                    for column in ("val_accuracy", "ci95_low", "ci95_high", "teacher_agreement")
                ),
                "search_seconds",
                "search_mac_images",
                "on_front",
                "chosen",
            ]
        )
        for a in assessments:
            name = a.candidate.name
            mine = [t for t in search.trials if t.name == name]
            writer.writerow(
                [
                    a.candidate.arch,
                    a.input_size,
                    a.params,
                    a.macs,
                    *(f"{a.per_target[t].predicted_latency_ms:.4f}" for t in names),
                    *(f"{a.per_target[t].budget_ms:g}" for t in names),
                    f"{a.model_mb:.4f}",
                    f"{a.peak_memory_mb:.4f}",
                    " ".join(a.fallback_ops),
                    a.feasible,
                    "; ".join(a.reasons),
                    *(cell for t in search.trials_of(name) for cell in _rung_cells(t)),
                    f"{sum(t.seconds for t in mine):.2f}" if mine else "",
                    f"{sum(t.mac_images for t in mine):.4g}" if mine else "",
                    name in search.front,
                    name == search.chosen,
                ]
            )


def _rung_cells(t: Trial | None) -> tuple[str, ...]:
    """A trial's columns in search.csv; empty where it did not run or a figure was not recorded."""

    def cell(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    if t is None:
        return ("",) * 4
    return cell(t.score), cell(t.ci_low), cell(t.ci_high), cell(t.teacher_agreement)
