"""Accuracy evidence for successive halving: a short distillation run of one candidate from the actual
teacher, on a seeded subset of the user's training images, scored by validation accuracy.

Every candidate of a rung trains on the same subset with the same recipe (only the epochs shrink),
so their scores are comparable; the teacher-output cache is keyed on the subset, so the teacher's
logits for a rung are computed once and read by every candidate of that rung.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.search.halving import RungPlan, ValidationScore

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekd.data import DataSplits
    from edgekd.distill.stage import DistillPlan
    from edgekd.distill.trainer import TrainConfig
    from edgekd.progress import Observer

log = logging.getLogger(__name__)


def evidence(
    build: Callable[[str], nn.Module],
    teacher: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    plan: DistillPlan,
    *,
    cache_dir: Path | None = None,
    observer: Observer | None = None,
    rungs: Sequence[RungPlan] = (),
) -> Callable[[str, RungPlan], ValidationScore]:
    """`evaluate(name, rung)` for `successive_halving`: distil a fresh `build(name)` for the rung's
    epochs on its first `rung.images` (seeded) training images, return its validation accuracy over
    the validation images, with its agreement with the teacher and KL to it there. With the planned
    `rungs`, each trial's progress bars name it: trial k of n, the candidate and its rung."""
    from edgekd.data import with_train_subset
    from edgekd.distill.stage import distil_student
    from edgekd.progress import SilentObserver

    planned = planned_trials(rungs)
    started = 0

    def evaluate(name: str, rung: RungPlan) -> ValidationScore:
        nonlocal started
        started += 1
        index = next((i for i, r in enumerate(rungs) if r == rung), None)
        where = f"rung {index + 1}/{len(rungs)}" if index is not None else "rung retried longer"
        of = f"/{planned}" if planned and started <= planned else ""
        trial = Named(observer or SilentObserver(), f"trial {started}{of} {name} {where}")
        subset = with_train_subset(data, rung.images, seed=config.seed)
        short = dataclasses.replace(config, epochs=rung.epochs)
        result = distil_student(
            lambda: build(name),
            teacher,
            subset,
            short,
            plan,
            arch=name,
            cache_dir=cache_dir,
            observer=trial,
        )
        last = result.history[-1]
        log.info(
            "search: %s, %d epochs on %d images: val accuracy %.4f (teacher agreement %s)",
            name,
            rung.epochs,
            rung.images,
            last.val_accuracy,
            "n/a" if last.val_teacher_agreement is None else f"{last.val_teacher_agreement:.4f}",
        )
        return ValidationScore(
            last.val_accuracy, len(data.val), last.val_teacher_agreement, last.val_teacher_kl
        )

    return evaluate


def planned_trials(rungs: Sequence[RungPlan]) -> int:
    """The trials successive halving trains over `rungs`: a rung that repeats an earlier one's epochs
    and images reuses its scores and trains nothing (as `training_rates.search_seconds` counts them)."""
    seen: set[tuple[int, int]] = set()
    count = 0
    for rung in rungs:
        if (rung.epochs, rung.images) not in seen:
            seen.add((rung.epochs, rung.images))
            count += rung.candidates
    return count


class Named:
    """An observer whose task bars carry `prefix`: the search trial they belong to."""

    def __init__(self, observer: Observer, prefix: str) -> None:
        self._observer, self._prefix = observer, prefix

    def stage(self, name: str, detail: str = "") -> None:
        self._observer.stage(name, detail)

    def task(self, description: str, total: int | None):
        return self._observer.task(f"{self._prefix}: {description}", total)


def chance_level(dataset) -> float:
    """The accuracy of always answering the most common class: the largest class's share of the
    labels of `dataset` (the validation split). A trial that cannot beat it has learnt nothing."""
    import numpy as np

    from edgekd.data import labels_of

    labels = labels_of(dataset)  # read without decoding an image where the split holds them apart
    if not len(labels):
        raise ValueError("chance_level needs at least one label")
    return float(np.bincount(labels).max() / len(labels))
