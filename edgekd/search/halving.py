"""Successive halving (Jamieson & Talwalkar, AISTATS 2016; Li et al., "Hyperband", JMLR 2018): rank
feasible students by evidence, not by guessing. Every candidate gets a short distillation run on a
subset of the data; the best 1/eta go on to a run with eta times the budget, and so on, until one
is left or the budget is spent. The final choice is the best validation accuracy of the last rung.

Why this and not Optuna: the search space here is a short list of architectures (times a few input
sizes), not a continuous space for a sampler to model, and what must be decided is how to spend a
fixed compute budget across them — which is what successive halving does, with a result that is
easy to account for rung by rung. Optuna's own SuccessiveHalvingPruner implements the same rule.

Each rung's cost is recorded two ways: measured seconds, and training work in MAC-images
(3 × MACs per image for forward and backward, times images seen), so a rung's share of an
oracle's cost can be compared on machines of different speed.

Example:
    >>> rungs = plan_rungs(9, eta=3, max_epochs=9, max_images=900)
    >>> [(r.candidates, r.epochs, r.images) for r in rungs]
    [(9, 1, 100), (3, 3, 300), (1, 9, 900)]
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgekd.errors import ConfigError

# Forward + backward ~ 3x the forward MACs (backward computes gradients for inputs and weights).
TRAINING_MACS_PER_FORWARD_MAC = 3


@dataclass(frozen=True)
class RungPlan:
    candidates: int  # how many enter the rung
    epochs: int
    images: int  # training images (a seeded subset of the user's data)


@dataclass(frozen=True)
class Trial:
    name: str
    rung: int
    epochs: int
    images: int
    score: float  # validation accuracy
    seconds: float
    mac_images: float  # training work: 3 x MACs x images x epochs
    reused: bool = False  # an identical earlier trial's score, not run again


@dataclass(frozen=True)
class Budget:
    """At most `seconds` of wall clock or `trials` first-rung candidates (None: unbounded)."""

    seconds: float | None = None
    trials: int | None = None


class TrialTotals:
    """What a record holding `trials` reports about them: their cost, and how many rungs ran."""

    trials: tuple[Trial, ...]

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.trials)

    @property
    def mac_images(self) -> float:
        return sum(t.mac_images for t in self.trials)

    @property
    def rungs(self) -> int:
        return max((t.rung for t in self.trials), default=-1) + 1


@dataclass(frozen=True)
class HalvingResult(TrialTotals):
    trials: tuple[Trial, ...]
    winner: str
    stopped_early: bool  # the time budget ran out before the last planned rung

    def rung(self, index: int) -> list[Trial]:
        return [t for t in self.trials if t.rung == index]


def parse_budget(text: str) -> Budget:
    """`20m`, `90s`, `1.5h` (wall clock), `8` (trials: candidates that enter the first rung), `0` (no
    trials: choose without evidence) or `all` (every feasible candidate, no time limit)."""
    if str(text).strip().lower() == "all":
        return Budget()
    if str(text).strip() == "0":
        return Budget(trials=0)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise ConfigError(
            f"search budget {text!r} is neither a duration (20m, 90s, 1.5h), a number of trials (8), "
            "0 (no trials) nor all."
        )
    value, unit = float(match.group(1)), match.group(2)
    if not unit:
        if value != int(value) or value < 1:
            raise ConfigError(f"search budget {text!r}: a number of trials must be a whole number >= 1.")
        return Budget(trials=int(value))
    seconds = value * {"s": 1, "m": 60, "h": 3600}[unit]
    if seconds <= 0:
        raise ConfigError(f"search budget {text!r} must be positive.")
    return Budget(seconds=seconds)


def plan_rungs(
    candidates: int,
    *,
    eta: int = 3,
    max_epochs: int,
    max_images: int,
    min_images: int = 64,
    min_images_seen: int = 0,
) -> list[RungPlan]:
    """Rungs from `candidates` down to 1, each keeping ceil(n / eta): rung r (counted back from the
    last) trains for max_epochs / eta^r epochs (at least 1) on max_images / eta^r images (at least
    `min_images`), so every rung costs about the same in total and the last one is the full budget.
    `min_images_seen` (epochs x images) raises a rung's epochs, up to `max_epochs`, so that no rung
    is too short to learn anything: a fresh network scores at chance after a few dozen steps, and a
    rung of chance scores ranks nothing."""
    if candidates < 1 or eta < 2 or max_epochs < 1 or max_images < 1:
        raise ValueError(f"need candidates >= 1, eta >= 2, positive budgets: {candidates}, {eta}")
    counts = [candidates]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / eta))
    last = len(counts) - 1
    rungs = []
    for r, n in enumerate(counts):
        images = min(max_images, max(min_images, round(max_images / eta ** (last - r))))
        epochs = max(1, round(max_epochs / eta ** (last - r)), math.ceil(min_images_seen / images))
        rungs.append(RungPlan(candidates=n, epochs=min(epochs, max_epochs), images=images))
    return rungs


def successive_halving(
    names: Sequence[str],
    evaluate: Callable[[str, RungPlan], float],
    rungs: Sequence[RungPlan],
    *,
    macs: dict[str, int],
    budget: Budget | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> HalvingResult:
    """Run `rungs` (from `plan_rungs(len(names), ...)`) over `names`, best first by `evaluate`'s score
    (validation accuracy after a run of the rung's epochs on the rung's images). Ties keep the
    earlier name. With a time budget, no new rung starts once the budget is spent; the winner is
    then the best of the last rung that finished."""
    budget = budget or Budget()
    alive = list(names)
    if budget.trials is not None:
        alive = alive[: budget.trials]
    if not alive:
        raise ConfigError("successive halving needs at least one feasible candidate.")
    started = clock()
    trials: list[Trial] = []
    stopped_early = False
    last_scores: dict[str, float] = {}
    for index, plan in enumerate(rungs):
        if index and budget.seconds is not None and clock() - started >= budget.seconds:
            stopped_early = True
            break
        entering = alive  # the previous rung kept exactly as many as this one takes
        scores: dict[str, float] = {}
        for name in entering:
            earlier = next(
                (t for t in trials if (t.name, t.epochs, t.images) == (name, plan.epochs, plan.images)), None
            )
            if earlier is not None:  # the same run again (small data: rungs of equal size): no cost
                trials.append(
                    dataclasses.replace(earlier, rung=index, seconds=0.0, mac_images=0.0, reused=True)
                )
                scores[name] = earlier.score
                continue
            t0 = clock()
            score = evaluate(name, plan)
            seconds = clock() - t0
            work = TRAINING_MACS_PER_FORWARD_MAC * macs[name] * plan.images * plan.epochs
            trials.append(Trial(name, index, plan.epochs, plan.images, score, seconds, work))
            scores[name] = score
        ranked = sorted(entering, key=lambda n: -scores[n])  # stable: ties keep the earlier name
        last_scores = scores
        keep = rungs[index + 1].candidates if index + 1 < len(rungs) else 1
        alive = ranked[:keep]
        if len(entering) == 1:
            break
    winner = max(last_scores, key=lambda n: (last_scores[n], -list(names).index(n)))
    return HalvingResult(tuple(trials), winner, stopped_early)
