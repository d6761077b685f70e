"""The retention objective decided on full trainings, for small data: the feasible candidates are
trained with the final recipe one at a time, fastest (by predicted latency) first, and the first whose
validation accuracy keeps `min_retention` of the teacher's validation accuracy is the student, its
trained weights the final student (nothing is trained again). At most `MAX_CONFIRMATIONS` are trained
(fewer under a trial budget, none started once a search budget in seconds is spent), the last of them
a capable reference rather than the next fastest (`confirmations`); when none keeps it, the most
accurate of those trained is shipped, and the reason says so.

Why not successive halving here: on a small training split (fit's `is_small_data`) the final training
of one small candidate costs about what the whole halving search does, and the halving's short trials
rank how fast a candidate learns in a few hundred steps, which on digits was not how good it is after
the final training: it chose lcnet_100 (1.7 M parameters, 91.8 % test) where lcnet_035 reaches 97-98 %
(benchmarks/results/digits-final-recipe.md). Here the evidence is the thing shipped.

"Keeps" is judged on the evidence's noise, as the halving search's rule is: a candidate passes unless
its validation accuracy is shown to fall short, i.e. the upper end of its Wilson 95 % interval reaches
`min_retention` of the teacher's validation accuracy. On digits' 269 validation images the interval is
about ±2.5 points, wider than the gap the bar draws (97 % of a 98.9 % teacher is 95.9 %): judged on
the point estimate, lcnet_035 (95.2 %, tied to the image with the next candidate) failed on every seed,
so every fit trained three candidates and fell back to it anyway (benchmarks/results/
digits-confirm-search.md). The sentence gives the student's interval and the retention interval it
implies, so a reader sees how close to the bar the choice was.

Example:
    >>> keeps(0.97, teacher=0.99, floor=0.97)  # the interval reaches 98.0 % of the teacher's
    True
    >>> keeps(0.955, teacher=0.99, floor=0.97)  # at best 96.5 %: shown to fall short
    False
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgekd.errors import NoFeasibleStudentError
from edgekd.search.constraints import CandidateAssessment, latency_phrase
from edgekd.search.halving import (
    TRAINING_MACS_PER_FORWARD_MAC,
    Budget,
    RungPlan,
    ValidationScore,
    trial_record,
)
from edgekd.search.ranking import DEFAULT_MIN_RETENTION, evidence_front, speed_key
from edgekd.search.select import SearchResult, evidence_phrase

log = logging.getLogger(__name__)

# Full trainings the search runs at most before it falls back to the most accurate of them: on digits
# one takes ~130 s on a 2-core machine (30 epochs, the small-data minimum of images seen), so a
# search that falls back costs three final trainings; one that passes first costs one, the final
# training itself.
MAX_CONFIRMATIONS = 3


def confirmation_order(feasible: Sequence[CandidateAssessment]) -> list[CandidateAssessment]:
    """The feasible candidates fastest first: the worst ratio of predicted latency to budget over the
    targets, then the total predicted latency (`ranking.speed_key`)."""
    return sorted((a for a in feasible if a.feasible), key=speed_key)


def confirmations(
    feasible: Sequence[CandidateAssessment], budget: Budget, at_least: int = 0
) -> list[CandidateAssessment]:
    """The candidates the search may train, in the order it trains them: the fastest first
    (`confirmation_order`), `confirmation_count` of them (at least `at_least`), the last slot kept for
    the reference the halving search keeps one for (`ranking.entrants`: the highest ImageNet top-1
    among the candidates of at most the median MACs). Without it a fallback chooses among the smallest
    students alone: on 1,000 EuroSAT images at 64 px the three fastest of the 8 oracle students kept
    52-81 % of the teacher's validation accuracy, and the fallback was tf_mobilenetv3_small_minimal_100
    at 59.7 % test; with the reference, mobilenetv3_small_100 at 64.5 % (the best, efficientvit_m0,
    69.0 %; benchmarks/results/search_eurosat-1000img.json)."""
    from edgekd.search.ranking import entrants

    ordered = confirmation_order(feasible)
    return entrants(ordered, max(at_least, confirmation_count(budget, len(ordered))))


def confirmation_count(budget: Budget, feasible: int) -> int:
    """How many candidates may be trained: MAX_CONFIRMATIONS, fewer under a trial budget or when
    fewer fit."""
    cap = MAX_CONFIRMATIONS if budget.trials is None else min(MAX_CONFIRMATIONS, budget.trials)
    return min(cap, feasible)


def keeps(upper: float, *, teacher: float, floor: float) -> bool:
    """Whether a validation accuracy whose interval reaches up to `upper` may keep `floor` of the
    teacher's `teacher` on the same images (is not shown to fall short of it)."""
    return upper >= floor * teacher


@dataclasses.dataclass(frozen=True)
class Confirmed:
    """The search's record, and the chosen candidate's trained model as `train` returned it (the final
    student)."""

    result: SearchResult
    trained: Any


def confirm_student(
    assessments: Sequence[CandidateAssessment],
    train: Callable[[str], tuple[ValidationScore, Any]],
    *,
    teacher_val: ValidationScore,
    epochs: int,
    images: int,
    budget: Budget,
    target_name: str,
    min_retention: float = DEFAULT_MIN_RETENTION,
    chance: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Confirmed:
    """Train the feasible candidates fastest first (`train(name)`: a full training with the final
    recipe, returning its validation score and the trained model) until one keeps `min_retention` of
    the teacher's validation accuracy (`teacher_val`); see the module. `epochs` and `images` are the
    final recipe's, for the record and the sentence."""
    feasible = [a for a in assessments if a.feasible]
    if not feasible:
        details = "; ".join(f"{a.candidate.name}: {', '.join(a.reasons)}" for a in assessments)
        raise NoFeasibleStudentError(f"no candidate fits {target_name}'s budgets ({details}).")
    by_name = {a.candidate.name: a for a in feasible}
    order = confirmations(feasible, budget, at_least=1)
    fastest = confirmation_order(feasible)[: len(order)]
    reference = order[-1].candidate.name if order != fastest else None
    teacher = teacher_val.accuracy
    started = clock()
    trials, models = [], {}
    passed = None
    for index, a in enumerate(order):
        name = a.candidate.name
        if index and budget.seconds is not None and clock() - started >= budget.seconds:
            log.info("search: the search budget is spent after %d full trainings", index)
            break
        t0 = clock()
        score, model = train(name)
        work = TRAINING_MACS_PER_FORWARD_MAC * a.macs * images * epochs
        trial = trial_record(name, 0, RungPlan(1, epochs, images), score, clock() - t0, work, False)
        trials.append(trial)
        log.info(
            "search: %s after its full training keeps %s of the teacher's validation accuracy (%s)",
            name,
            _kept(trial.score, teacher),
            evidence_phrase(trial),
        )
        if keeps(trial.interval[1], teacher=teacher, floor=min_retention):
            passed, models[name] = trial, model
            break
        best_so_far = max(trials, key=lambda t: t.score)
        if best_so_far is trial:  # keep only the model a fallback could ship
            models = {name: model}
    chosen = passed or max(trials, key=lambda t: t.score)  # equal scores: the first, the fastest
    seconds = sum(t.seconds for t in trials)
    if reference not in {t.name for t in trials}:
        reference = None
    done = (
        f"{len(trials)} full training{'s' if len(trials) != 1 else ''} ({epochs} epochs on {images} "
        f"training images, the final recipe) of the {len(feasible)} candidates that fit {target_name}, "
        f"fastest first{', then the reference' if reference else ''}; search {seconds:.0f} s; the "
        "chosen one's weights are the final student"
    )
    sentence = _reason(chosen, passed is not None, trials, teacher_val, min_retention, done, reference)
    reason = f"{sentence}, and {chosen.name} {latency_phrase(by_name[chosen.name])}."
    result = SearchResult(
        chosen.name,
        reason,
        tuple(trials),
        tuple(t.name for t in trials),
        evidence_front(feasible, trials),
        stopped_early=passed is None and len(trials) < len(order),
        objective="retention",
        min_retention=min_retention,
        chance=chance,
        mode="confirm",
        teacher_val_accuracy=teacher,
    )
    return Confirmed(result, models[chosen.name])


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _kept(score: float, teacher: float) -> str:
    """`score` as a share of the teacher's accuracy (a teacher at 0 %: not a share of anything)."""
    return _pct(score / teacher) if teacher else "all (the teacher scored 0 %)"


def _retention(t, teacher: float) -> str:
    """`t`'s retention of the teacher's validation accuracy, with the interval its Wilson interval
    implies."""
    low, high = t.interval
    kept = f"{_kept(t.score, teacher)} of the teacher's validation accuracy"
    if (low, high) == (t.score, t.score) or not teacher:
        return kept
    return f"{kept} (95 % CI {100 * low / teacher:.1f}–{100 * high / teacher:.1f} %)"


# How the sentence names the last candidate `confirmations` trains when it is not the next fastest.
REFERENCE_WORDS = "the most capable by its ImageNet top-1 among the candidates of at most the median MACs"


def _reason(
    chosen,
    passed: bool,
    trials,
    teacher_val: ValidationScore,
    floor: float,
    done: str,
    reference: str | None = None,
) -> str:
    """The reason sentence; `reference` names the trained candidate that `confirmations` took as the
    reference instead of the next fastest (None when there is none among the trials)."""
    teacher = teacher_val.accuracy
    images = f" {teacher_val.images}" if teacher_val.images else ""
    against = f"against the teacher's {_pct(teacher)} on the same{images} images"
    short = [t for t in trials if t is not chosen]
    fell = "; ".join(f"{t.name} kept {_kept(t.score, teacher)}" for t in short)
    tie = " (the faster of those tied)" if any(t.score == chosen.score for t in short) else ""
    if passed and chosen.name == reference:
        return (
            f"Objective retention: the {len(short)} fastest candidates fell short of {100 * floor:g} % "
            f"of the teacher's validation accuracy after a full training, beyond the noise ({fell}); "
            f"{chosen.name}, trained next as {REFERENCE_WORDS}, keeps it within the noise of "
            f"{chosen.val_images or 'its'} validation images: it keeps {_retention(chosen, teacher)}, "
            f"validation accuracy {evidence_phrase(chosen)}, {against} ({done})"
        )
    if passed:
        faster = f" (faster ones fell short: {fell})" if fell else ""
        return (
            f"Objective retention: {chosen.name} is the fastest candidate whose full training keeps "
            f"{100 * floor:g} % of the teacher's validation accuracy within the noise of "
            f"{chosen.val_images or 'its'} validation images{faster}: it keeps "
            f"{_retention(chosen, teacher)}, validation accuracy {evidence_phrase(chosen)}, {against} "
            f"({done})"
        )
    who = f"each of the {len(trials)} fastest candidates"
    if reference:
        who = (
            f"each of the {len(trials)} candidates trained (the {len(trials) - 1} fastest, and "
            f"{reference}, {REFERENCE_WORDS})"
        )
    return (
        f"Objective retention: {who} fell short of {100 * floor:g} % "
        f"of the teacher's validation accuracy after a full training, beyond the noise "
        f"({fell or 'none other'}; {chosen.name} "
        f"{_kept(chosen.score, teacher)}); falling back to the most accurate of them{tie}, {chosen.name}: "
        f"validation accuracy {evidence_phrase(chosen)}, {against} ({done})"
    )


def teacher_validation(teacher, data) -> tuple[ValidationScore, Any]:
    """The teacher's validation accuracy over the validation images, and its logits there (for each
    student's agreement with it)."""
    from edgekd.distill.trainer import accuracy, predict

    logits, labels = predict(teacher, data.val)
    return ValidationScore(accuracy(logits, labels), len(labels)), logits


def full_trainings(
    build: Callable[[str], Any],
    teacher,
    data,
    config,
    plan,
    *,
    teacher_logits,
    cache_dir=None,
    observer=None,
    checkpoint_dir=None,
) -> Callable[[str], tuple[ValidationScore, Any]]:
    """`train(name)` for `confirm_student`: distil a fresh `build(name)` with the final recipe
    (`config`, `plan`) on all the training images, as fit's final training does, and score the
    student it returns (with the weight average, where the recipe has one) on the validation images
    itself: its accuracy, and its top-1 agreement with the teacher (`teacher_logits`). Returns the
    score and the `DistillResult`. Each candidate checkpoints under `checkpoint_dir / name`, so an
    interrupted confirmation resumes."""
    from edgekd.distill.stage import distil_student
    from edgekd.distill.trainer import accuracy, predict
    from edgekd.progress import SilentObserver
    from edgekd.search.evidence import Named

    count = 0

    def train(name: str) -> tuple[ValidationScore, Any]:
        nonlocal count
        count += 1
        trained = distil_student(
            lambda: build(name),
            teacher,
            data,
            config,
            plan,
            arch=name,
            cache_dir=cache_dir,
            checkpoint_dir=None if checkpoint_dir is None else checkpoint_dir / name,
            observer=Named(observer or SilentObserver(), f"full training {count} {name}"),
        )
        logits, labels = predict(trained.student, data.val)
        agreement = float((logits.argmax(1) == teacher_logits.argmax(1)).float().mean())
        return ValidationScore(accuracy(logits, labels), len(labels), agreement), trained

    return train


def confirm_in_full(
    assessments: Sequence[CandidateAssessment],
    build: Callable[[str], Any],
    teacher,
    data,
    config,
    plan,
    *,
    budget: Budget,
    target_name: str,
    min_retention: float = DEFAULT_MIN_RETENTION,
    cache_dir=None,
    observer=None,
    checkpoint_dir=None,
    clock: Callable[[], float] = time.perf_counter,
) -> Confirmed:
    """fit's search on small data for retention: `confirm_student` over `full_trainings` with the
    final recipe (`config`, `plan`), against the teacher's validation accuracy, with the chance level
    of the validation labels recorded. `clock` times the trainings and the budget (under torchrun,
    rank 0's: `edgekd.distill.distributed.main_clock`)."""
    from edgekd.search.evidence import chance_level

    teacher_val, teacher_logits = teacher_validation(teacher, data)
    train = full_trainings(
        build,
        teacher,
        data,
        config,
        plan,
        teacher_logits=teacher_logits,
        cache_dir=cache_dir,
        observer=observer,
        checkpoint_dir=checkpoint_dir,
    )
    return confirm_student(
        assessments,
        train,
        teacher_val=teacher_val,
        epochs=config.epochs,
        images=len(data.train),
        budget=budget,
        target_name=target_name,
        min_retention=min_retention,
        chance=chance_level(data.val),
        clock=clock,
    )
