"""Accuracy evidence for successive halving: a short distillation run of one candidate from the actual
teacher, on a seeded subset of the user's training images, scored by validation accuracy.

Every candidate of a rung trains on the same subset with the same recipe (only the epochs shrink),
so their scores are comparable; the teacher-output cache is keyed on the subset, so the teacher's
logits for a rung are computed once and read by every candidate of that rung.

Example:
    >>> # evaluate = evidence(build, teacher, data, train_config, DistillPlan(), cache_dir=cache)
    >>> # result = successive_halving(names, evaluate, plan_rungs(len(names), ...), macs=macs)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.search.halving import RungPlan

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
) -> Callable[[str, RungPlan], float]:
    """`evaluate(name, rung)` for `successive_halving`: distil a fresh `build(name)` for the rung's
    epochs on its first `rung.images` (seeded) training images, return its validation accuracy."""
    from edgekd.data import with_train_subset
    from edgekd.distill.stage import distil_student

    def evaluate(name: str, rung: RungPlan) -> float:
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
            observer=observer,
        )
        score = result.history[-1].val_accuracy
        log.info(
            "search: %s, %d epochs on %d images: val accuracy %.4f", name, rung.epochs, rung.images, score
        )
        return score

    return evaluate
