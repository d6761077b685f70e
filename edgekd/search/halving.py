"""Successive halving (Jamieson & Talwalkar, AISTATS 2016; Li et al., "Hyperband", JMLR 2018): rank
feasible students by evidence, not by guessing. Every candidate gets a short distillation run on a
subset of the data; the best 1/eta go on to a run with eta times the budget, and so on, until one
is left or the budget is spent. The rung a lone winner would enter is not run: the fit's final
distillation trains that one candidate on the full budget anyway, so the rung would decide nothing.
Which ones go on, and which one is chosen, is the objective's rule
(`edgekd.search.select`); the default rule here ranks by validation accuracy.

Every score comes with its Wilson 95 % interval over the validation images (`wilson_interval`), so a
rule can tell a difference from noise. When even the first rung's best score is at chance (its
interval reaches down to the share of the largest class), the rung is run once more with twice the
epochs (and twice the images where the data has them); a rung still at chance ends the search with
`at_chance` set, since ranking chance scores would pick a candidate by luck.

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
    [(9, 1, 900), (3, 3, 900)]
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
class ValidationScore:
    """What a trial's `evaluate` returns: the validation accuracy, over how many images, and how
    closely the student follows the teacher there (None where not measured)."""

    accuracy: float
    images: int | None = None  # validation images the accuracy is over; None: unknown, no interval
    teacher_agreement: float | None = None  # top-1 agreement with the teacher on validation
    teacher_kl: float | None = None  # KL(teacher ‖ student) at T = 1, mean over validation images


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (Wilson, JASA 1927): unlike the normal
    approximation it stays inside [0, 1] and keeps its coverage near 0 % and 100 %, where short trials
    and easy data sets put accuracies."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


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
    # The evidence's precision (None in a search.json from before they were recorded, or when the
    # evaluation gave no image count): the validation images and the score's Wilson 95 % interval.
    val_images: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    teacher_agreement: float | None = None
    teacher_kl: float | None = None
    retry: bool = False  # the first rung run again with a longer budget, its scores having been at chance

    @property
    def interval(self) -> tuple[float, float]:
        """The score's 95 % interval; a score without an image count is its own interval."""
        if self.ci_low is None or self.ci_high is None:
            return self.score, self.score
        return self.ci_low, self.ci_high


@dataclass(frozen=True)
class Budget:
    """At most `seconds` of wall clock or `trials` first-rung candidates (None: unbounded)."""

    seconds: float | None = None
    trials: int | None = None


class TrialTotals:
    """What a record holding `trials` reports about them: their cost, how many rungs ran, and each
    rung's trials (a retried rung: the retry's)."""

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

    def rung(self, index: int) -> list[Trial]:
        """The trials that rank rung `index`: a retried rung's retry, not its first attempt."""
        trials = [t for t in self.trials if t.rung == index]
        retried = [t for t in trials if t.retry]
        return retried or trials


@dataclass(frozen=True)
class HalvingResult(TrialTotals):
    trials: tuple[Trial, ...]
    winner: str | None  # None: the first rung stayed at chance (`at_chance`), nothing was ranked
    stopped_early: bool  # the time budget ran out before the last planned rung
    at_chance: bool = False  # the first rung's best score was at chance, also when run again longer


def at_chance(trials: Sequence[Trial], chance: float | None) -> bool:
    """Whether the best of `trials` is indistinguishable from always answering the largest class: the
    lower end of its 95 % interval is at or below `chance` (None: chance unknown, never at chance)."""
    if chance is None or not trials:
        return False
    best = max(trials, key=lambda t: t.score)
    return best.interval[0] <= chance


def rank_by_score(trials: Sequence[Trial]) -> list[str]:
    """The plain rule: best validation accuracy first; equal scores keep the entry order."""
    return [t.name for t in sorted(trials, key=lambda t: -t.score)]


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
    """Rungs from `candidates` down to the one that keeps a single candidate, each keeping ceil(n /
    eta): rung r, counted back from the lone winner's (which is planned but not returned: the final
    distillation is that run), lets each candidate see max_epochs x max_images / eta^r images, so
    every rung costs about the same in total. They are spent on as many distinct images as there are
    (up to `max_images`, at least `min_images`), epochs making up the rest: on EuroSAT at 6,000 images,
    3 epochs on 1,000 images ranked mobilenetv3_large_075 above ghostnet_100 (57.9 % against 54.5 %,
    benchmarks/results/search_eurosat-small-rungs.json) and full trainings the other way round (82.5 %
    against 83.7 % test), while 2 epochs on 3,000 images already agreed with them (66.4 % against
    73.6 %, benchmarks/results/search_rungs_probe.json). A single candidate gets one rung at the
    full budget: it has nothing to be compared with, but its score still shows whether the budget lifts
    it above chance.
    `min_images_seen` (epochs x images) raises a rung's budget, up to `max_epochs` epochs, so that no
    rung is too short to learn anything: a fresh network scores at chance after a few dozen steps, and
    a rung of chance scores ranks nothing."""
    if candidates < 1 or eta < 2 or max_epochs < 1 or max_images < 1:
        raise ValueError(f"need candidates >= 1, eta >= 2, positive budgets: {candidates}, {eta}")
    counts = [candidates]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / eta))
    last = len(counts) - 1
    rungs: list[RungPlan] = []
    for r, n in enumerate(counts):
        seen = max(min_images_seen, max_epochs * max_images / eta ** (last - r))
        epochs = min(max_epochs, max(1, math.ceil(seen / max_images)))
        # Never fewer distinct images than the rung before: a second epoch would otherwise shrink the
        # subset (4,000 images at 1 epoch, then 2 epochs on 2,667) and a later rung see less of the data.
        fewest = max(min_images, rungs[-1].images if rungs else 0)
        images = min(max_images, max(fewest, round(seen / epochs)))
        rungs.append(RungPlan(candidates=n, epochs=epochs, images=images))
    return rungs[:-1] if len(rungs) > 1 else rungs


def successive_halving(
    names: Sequence[str],
    evaluate: Callable[[str, RungPlan], ValidationScore | float],
    rungs: Sequence[RungPlan],
    *,
    macs: dict[str, int],
    budget: Budget | None = None,
    rank: Callable[[Sequence[Trial]], list[str]] = rank_by_score,
    chance: float | None = None,
    available_images: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> HalvingResult:
    """Run `rungs` (from `plan_rungs(len(names), ...)`) over `names`: `evaluate` scores a candidate
    after a run of the rung's epochs on the rung's images (a `ValidationScore`, or a bare accuracy),
    `rank` orders a rung's trials best first (default: by score, ties keep the earlier name) and the
    first of the last rung is the winner. With a time budget, no new rung starts once the budget is
    spent; the winner is then the first of the last rung that finished.

    `chance` (the largest class's share of the validation labels) turns on the chance check: a first
    rung whose best score is at chance is run again with twice the epochs and twice the images (up to
    `available_images`), and later rungs train at least as long; still at chance, the search stops
    there with `at_chance` set and no winner."""
    budget = budget or Budget()
    alive = list(names)
    if budget.trials is not None:
        alive = alive[: budget.trials]
    if not alive:
        raise ConfigError("successive halving needs at least one feasible candidate.")
    started = clock()
    trials: list[Trial] = []
    stopped_early = False
    last: list[Trial] = []
    rungs = list(rungs)

    def run_rung(index: int, plan: RungPlan, entering: list[str], retry: bool = False) -> list[Trial]:
        rung_trials = []
        for name in entering:
            earlier = next(
                (t for t in trials if (t.name, t.epochs, t.images) == (name, plan.epochs, plan.images)), None
            )
            if earlier is not None:  # the same run again (small data: rungs of equal size): no cost
                trial = dataclasses.replace(
                    earlier, rung=index, seconds=0.0, mac_images=0.0, reused=True, retry=retry
                )
            else:
                t0 = clock()
                score = evaluate(name, plan)
                seconds = clock() - t0
                work = TRAINING_MACS_PER_FORWARD_MAC * macs[name] * plan.images * plan.epochs
                trial = trial_record(name, index, plan, score, seconds, work, retry)
            trials.append(trial)
            rung_trials.append(trial)
        return rung_trials

    # By index: the chance check below lengthens the rungs after the first while this loop runs.
    for index in range(len(rungs)):
        plan = rungs[index]
        if index and budget.seconds is not None and clock() - started >= budget.seconds:
            stopped_early = True
            break
        entering = alive  # the previous rung kept exactly as many as this one takes
        rung_trials = run_rung(index, plan, entering)
        if index == 0 and at_chance(rung_trials, chance):
            longer = RungPlan(
                plan.candidates, 2 * plan.epochs, min(2 * plan.images, available_images or plan.images)
            )
            rung_trials = run_rung(index, longer, entering, retry=True)
            if at_chance(rung_trials, chance):
                return HalvingResult(tuple(trials), None, stopped_early, at_chance=True)
            # A later rung no shorter than the retry: the planned budgets proved too short to learn.
            rungs = [plan, *(_at_least(r, longer) for r in rungs[1:])]
        ranked = rank(rung_trials)
        last = rung_trials
        keep = rungs[index + 1].candidates if index + 1 < len(rungs) else 1
        alive = ranked[:keep]
        if len(entering) == 1:
            break
    return HalvingResult(tuple(trials), rank(last)[0], stopped_early)


def trial_record(
    name: str, rung: int, plan: RungPlan, score: ValidationScore | float, seconds: float, work: float, retry
) -> Trial:
    """The record of one evaluation; a bare accuracy (no image count) gets no interval."""
    if not isinstance(score, ValidationScore):
        return Trial(name, rung, plan.epochs, plan.images, float(score), seconds, work, retry=retry)
    low = high = None
    if score.images:
        low, high = wilson_interval(round(score.accuracy * score.images), score.images)
    return Trial(
        name,
        rung,
        plan.epochs,
        plan.images,
        score.accuracy,
        seconds,
        work,
        val_images=score.images,
        ci_low=low,
        ci_high=high,
        teacher_agreement=score.teacher_agreement,
        teacher_kl=score.teacher_kl,
        retry=retry,
    )


def _at_least(plan: RungPlan, floor: RungPlan) -> RungPlan:
    return RungPlan(plan.candidates, max(plan.epochs, floor.epochs), max(plan.images, floor.images))
