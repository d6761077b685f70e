"""Choosing the student by evidence: the feasible candidates enter successive halving (`halving`)
in an order that spreads a trial budget across the latency/memory/capacity trade-off, the winner is
the best validation accuracy of the last rung, and the whole search (every trial, its cost, the
Pareto front, the reason) is one `SearchResult` that `fit` saves as `search.json`, so a resumed run
does not search again.

Example:
    >>> # result = select_student(assessments, evaluate, budget=Budget(trials=8), max_epochs=5,
    >>> #                         max_images=2000, target_name="pi5")
    >>> # result.chosen, result.reason
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekd._io import atomic_path
from edgekd.errors import NoFeasibleStudentError
from edgekd.search.constraints import Costed, latencies, latency_phrase
from edgekd.search.halving import Budget, RungPlan, Trial, TrialTotals, plan_rungs, successive_halving
from edgekd.search.pareto import pareto_front


@dataclass(frozen=True)
class SearchResult(TrialTotals):
    chosen: str  # the candidate's name
    reason: str  # one sentence for the report
    trials: tuple[Trial, ...] = ()  # empty: chosen without evidence (one candidate, or budget 0)
    entered: tuple[str, ...] = ()  # candidates that entered the first rung, in entry order
    front: tuple[str, ...] = ()  # feasible candidates on the Pareto front (latency, memory, evidence)
    stopped_early: bool = False  # the time budget ran out before the last planned rung

    def accuracies(self, name: str) -> list[float | None]:
        """`name`'s validation accuracy at each rung (None where it did not run)."""
        scores: list[float | None] = [None] * self.rungs
        for t in self.trials:
            if t.name == name:
                scores[t.rung] = t.score
        return scores

    def to_json(self) -> dict:
        return {**asdict(self), "seconds": self.seconds, "mac_images": self.mac_images}

    @classmethod
    def from_json(cls, data: dict) -> SearchResult:
        return cls(
            data["chosen"],
            data["reason"],
            tuple(Trial(**t) for t in data["trials"]),
            tuple(data["entered"]),
            tuple(data["front"]),
            data["stopped_early"],
        )


def entry_order(feasible: Sequence[Costed]) -> list[Costed]:
    """Feasible candidates by non-dominated layer of (predicted latency on each target ↓, peak
    memory ↓, MACs ↑);
    within a layer, spread over capacity: the most MACs first, then each next one the farthest (in
    log MACs) from those already taken. With a trial budget of N, the N that enter cover the
    trade-off from the fastest to the most capable instead of N near-identical large models."""
    left = list(feasible)
    ordered: list[Costed] = []
    while left:
        layer = pareto_front(
            [(*latencies(a), a.peak_memory_mb, a.macs) for a in left], minimize=_minimize(left[0], False)
        )
        ordered += _spread_by_macs([left[i] for i in layer])
        taken = set(layer)
        left = [a for i, a in enumerate(left) if i not in taken]
    return ordered


def _spread_by_macs(layer: list[Costed]) -> list[Costed]:
    remaining = sorted(layer, key=lambda a: -a.macs)
    picked = [remaining.pop(0)]
    while remaining:
        far = max(
            remaining,
            key=lambda a: min(abs(math.log(max(a.macs, 1) / max(p.macs, 1))) for p in picked),
        )
        remaining.remove(far)
        picked.append(far)
    return picked


def evidence_front(feasible: Sequence[Costed], trials: Sequence[Trial]) -> tuple[str, ...]:
    """Candidates of the first rung on the Pareto front of (latency on each target ↓, memory ↓,
    first-rung accuracy ↑).
    The first rung is the only one every candidate ran, so its accuracies are the comparable ones."""
    first = {t.name: t.score for t in trials if t.rung == 0}
    scored = [a for a in feasible if a.candidate.name in first]
    if not scored:
        return ()
    points = [(*latencies(a), a.peak_memory_mb, first[a.candidate.name]) for a in scored]
    return tuple(scored[i].candidate.name for i in pareto_front(points, minimize=_minimize(scored[0], False)))


def _minimize(a: Costed, last: bool) -> tuple[bool, ...]:
    """Objective senses: each target's latency and the peak memory are minimised, then `last`."""
    return (True,) * (len(a.per_target) + 1) + (last,)


def select_student(
    assessments: Sequence[Costed],
    evaluate: Callable[[str, RungPlan], float],
    *,
    budget: Budget,
    max_epochs: int,
    max_images: int,
    target_name: str,
    eta: int = 3,
    min_images: int = 64,
    min_images_seen: int = 0,
) -> SearchResult:
    """Rank the feasible candidates by short distillation runs (`evaluate`) and pick the best.
    A trial budget of 0, or a single feasible candidate, chooses without training: the candidate
    with the most MACs (the most capacity the target affords)."""
    feasible = [a for a in assessments if a.feasible]
    if not feasible:
        details = "; ".join(f"{a.candidate.name}: {', '.join(a.reasons)}" for a in assessments)
        raise NoFeasibleStudentError(f"no candidate fits {target_name}'s budgets ({details}).")
    by_name = {a.candidate.name: a for a in feasible}
    ordered = entry_order(feasible)
    entering = ordered[: budget.trials] if budget.trials is not None else ordered
    if len(entering) <= 1:
        pick = max(feasible, key=lambda a: (a.macs, a.params)) if not entering else entering[0]
        why = "the only feasible candidate" if len(feasible) == 1 else "no search trials: most MACs"
        return SearchResult(
            pick.candidate.name,
            f"{pick.candidate.name} ({why}; {len(feasible)} of {len(assessments)} candidates fit "
            f"{target_name}) {latency_phrase(pick)}.",
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
    )
    winner = by_name[halving.winner]
    last = max(t.rung for t in halving.trials)
    final = next(t for t in halving.trials if t.name == halving.winner and t.rung == last)
    cut = " (the time budget stopped it early)" if halving.stopped_early else ""
    reason = (
        f"{winner.candidate.name} had the best validation accuracy ({100 * final.score:.1f} %) in rung "
        f"{last + 1} of successive halving{cut} over {len(names)} of the {len(feasible)} candidates "
        f"that fit {target_name} ({final.epochs} epochs on {final.images} images; search "
        f"{halving.seconds:.0f} s), and {latency_phrase(winner)}."
    )
    return SearchResult(
        halving.winner,
        reason,
        halving.trials,
        tuple(names),
        evidence_front(feasible, halving.trials),
        halving.stopped_early,
    )


def write_search_csv(path: Path, assessments: Sequence[Costed], search: SearchResult) -> None:
    """Every candidate: its cost on the target, whether it fits and why not, its validation accuracy
    at each rung it ran, its share of the search's cost, and whether it is on the front or chosen.
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
                *(f"rung{r}_val_accuracy" for r in range(rungs)),
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
                    *("" if s is None else f"{s:.4f}" for s in search.accuracies(name)),
                    f"{sum(t.seconds for t in mine):.2f}" if mine else "",
                    f"{sum(t.mac_images for t in mine):.4g}" if mine else "",
                    name in search.front,
                    name == search.chosen,
                ]
            )
