"""Distillation losses, in a registry keyed by name, composed as a weighted sum from specs.

Every loss is a `DistillLoss` (an `nn.Module`) called on one `DistillOutputs`: the student's logits and
the labels, plus whatever the loss declares it needs (the teacher's logits, feature maps at paired
taps, pooled embeddings). `edgekd.distill.features.DistillForward` fills those in from timm models.
The losses on the logits are in `response_losses`, those on feature maps and embeddings in
`feature_losses`, their base in `loss_base`; this module is their registry and their composition.

Example:
    >>> import torch
    >>> from edgekd.distill.losses import DistillOutputs, parse_loss_specs
    >>> loss = parse_loss_specs(["kd:1.0", "logit_mse:0.5"], temperature=4.0)
    >>> batch = DistillOutputs(torch.zeros(2, 3), torch.tensor([0, 1]), teacher_logits=torch.zeros(2, 3))
    >>> float(loss(batch)) > 0
    True
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from edgekd._registry import Registry, did_you_mean
from edgekd.distill.feature_losses import AttentionTransfer, FitNetHints, RelationalKD, SimilarityPreserving
from edgekd.distill.loss_base import DistillLoss, DistillOutputs
from edgekd.distill.response_losses import DIST, CrossEntropy, DecoupledKD, HintonKD, LogitMSE
from edgekd.errors import ConfigError, UnknownNameError

__all__ = [
    "DIST",
    "LOSSES",
    "AttentionTransfer",
    "CrossEntropy",
    "DecoupledKD",
    "DistillLoss",
    "DistillOutputs",
    "FitNetHints",
    "HintonKD",
    "LogitMSE",
    "RelationalKD",
    "SimilarityPreserving",
    "WeightedSum",
    "make_loss",
    "parse_loss_specs",
]

LOSSES: Registry[type[DistillLoss]] = Registry("KD loss")
# Every loss by name, in one place: `--loss NAME` finds these. A new loss is a class in
# `response_losses` or `feature_losses` and one entry here.
for _name, _loss in (
    ("ce", CrossEntropy),
    ("kd", HintonKD),
    ("logit_mse", LogitMSE),
    ("dkd", DecoupledKD),
    ("dist", DIST),
    ("fitnet", FitNetHints),
    ("at", AttentionTransfer),
    ("rkd", RelationalKD),
    ("sp", SimilarityPreserving),
):
    _loss.name = _name
    LOSSES.add(_name, _loss)


class WeightedSum(DistillLoss):
    """Σ_k w_k · L_k over its terms; needs whatever any term needs, and forwards `prepare` to each.

    Example:
        >>> loss = WeightedSum([(1.0, make_loss("ce")), (0.5, make_loss("dkd"))])
        >>> loss.needs_teacher, loss.weights
        (True, (1.0, 0.5))
    """

    def __init__(self, terms: Sequence[tuple[float, DistillLoss]]) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("A weighted sum of losses needs at least one term.")
        self.weights = tuple(float(weight) for weight, _ in terms)
        self.terms = nn.ModuleList(loss for _, loss in terms)
        self.name = "+".join(f"{loss.name}:{weight:g}" for weight, loss in zip(self.weights, self.terms))
        self.needs_teacher = any(loss.needs_teacher for _, loss in terms)
        self.needs_features = any(loss.needs_features for _, loss in terms)
        self.needs_embedding = any(loss.needs_embedding for _, loss in terms)

    def prepare(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        for loss in self.terms:
            loss.prepare(student_channels, teacher_channels)

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        return sum(weight * loss(outputs) for weight, loss in zip(self.weights, self.terms))

    def extra_repr(self) -> str:
        return self.name


def _parameters(cls: type[DistillLoss]) -> list[str]:
    return list(inspect.signature(cls).parameters)


def make_loss(name: str, **params: Any) -> DistillLoss:
    """Build the registered loss `name` with its hyperparameters.

    Example:
        >>> make_loss("dkd", temperature=4.0, nckd_weight=8.0).tckd_weight
        1.0
    """
    cls = LOSSES.get(name)
    accepted = _parameters(cls)
    for key in params:
        if key not in accepted:
            raise ConfigError(f"The {name!r} loss has no parameter {key!r}.{did_you_mean(key, accepted)}")
    return cls(**params)


def parse_loss_specs(specs: Sequence[str], **params: Any) -> WeightedSum:
    """Build a weighted sum from specs `NAME[:WEIGHT]` (the weight defaults to 1), e.g. the CLI's
    `--loss kd:1.0 --loss fitnet:0.5`. Each term gets only those of `params` that its constructor takes,
    so a shared `temperature` reaches both `kd` and `dkd`; a parameter that no registered loss takes
    raises, as does a malformed spec, an unknown name, a weight that is not a positive number, or a
    name given twice.

    Example:
        >>> parse_loss_specs(["ce", "dkd:2"], temperature=2.0).terms[1].temperature
        2.0
    """
    if isinstance(specs, str):
        specs = [specs]
    known = {key for name in LOSSES for key in _parameters(LOSSES.get(name))}
    for key in params:
        if key not in known:
            raise ConfigError(f"No KD loss has a parameter {key!r}.{did_you_mean(key, sorted(known))}")
    if not specs:
        raise ConfigError("No loss given: pass at least one spec NAME[:WEIGHT], such as 'kd:1.0'.")
    terms: list[tuple[float, DistillLoss]] = []
    seen: set[str] = set()
    for spec in specs:
        name, has_weight, weight_text = (part.strip() for part in spec.partition(":"))
        try:
            weight = float(weight_text) if has_weight else 1.0
        except ValueError:
            raise ConfigError(
                f"Loss spec {spec!r}: the weight {weight_text!r} is not a number; expected NAME[:WEIGHT], "
                "such as 'kd:1.0'."
            ) from None
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(
                f"Loss spec {spec!r}: the weight must be a positive number; drop the term instead."
            )
        if name in seen:
            raise ConfigError(f"Loss spec {spec!r}: {name!r} is given twice; give each loss once.")
        seen.add(name)
        try:
            cls = LOSSES.get(name)
        except UnknownNameError as e:
            raise ConfigError(f"Loss spec {spec!r}: {e}") from None
        accepted = _parameters(cls)
        terms.append((weight, make_loss(name, **{k: v for k, v in params.items() if k in accepted})))
    return WeightedSum(terms)
