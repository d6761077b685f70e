"""Distillation losses, in a registry keyed by name, composed as a weighted sum from specs.

Every loss is a `DistillLoss` (an `nn.Module`) called on one `DistillOutputs`: the student's logits and
the labels, plus whatever the loss declares it needs (the teacher's logits, feature maps at paired
taps, pooled embeddings). `edgekd.distill.features.DistillForward` fills those in from timm models.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd._registry import Registry, did_you_mean
from edgekd.errors import ConfigError, EdgeKDError, UnknownNameError


@dataclass(frozen=True)
class DistillOutputs:
    """What one batch's forward pass produced. Feature lists are tap-aligned: `student_features[i]`
    is distilled towards `teacher_features[i]`; maps are NCHW and may differ in channels and size."""

    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_features: Sequence[torch.Tensor] = ()
    teacher_features: Sequence[torch.Tensor] = ()
    student_embedding: torch.Tensor | None = None
    teacher_embedding: torch.Tensor | None = None


class DistillLoss(nn.Module):
    """Base of every loss. The `needs_*` flags tell the trainer which forward pass to run."""

    name: str = ""  # the registry key, set on registration
    needs_teacher: bool = False
    # Maps and embeddings come in student/teacher pairs, so a loss that reads them needs a teacher too.
    needs_features: bool = False  # feature maps at the paired taps
    needs_embedding: bool = False  # the pooled pre-logit vectors

    def prepare(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        """Build parameters that depend on the tapped maps' channel counts (one entry per tap pair).
        Called before the optimiser is created, so that it trains them; a no-op unless overridden."""

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        raise NotImplementedError

    def _teacher_logits(self, outputs: DistillOutputs) -> torch.Tensor:
        if outputs.teacher_logits is None:
            raise ConfigError(
                f"The {self.name!r} loss needs the teacher's logits: pass a teacher to train()."
            )
        return outputs.teacher_logits

    def _feature_pairs(self, outputs: DistillOutputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        student, teacher = list(outputs.student_features), list(outputs.teacher_features)
        if not student or len(student) != len(teacher):
            raise ConfigError(
                f"The {self.name!r} loss needs feature maps at paired student and teacher taps, got "
                f"{len(student)} and {len(teacher)}: run the models through "
                "edgekd.distill.features.DistillForward."
            )
        return list(zip(student, teacher))

    def _embeddings(self, outputs: DistillOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        if outputs.student_embedding is None or outputs.teacher_embedding is None:
            raise ConfigError(
                f"The {self.name!r} loss needs the student's and the teacher's pooled embeddings: run the "
                "models through edgekd.distill.features.DistillForward."
            )
        return outputs.student_embedding.flatten(1), outputs.teacher_embedding.flatten(1)


LOSSES: Registry[type[DistillLoss]] = Registry("KD loss")
L = TypeVar("L", bound=type[DistillLoss])


def _register(name: str) -> Callable[[L], L]:
    def decorator(cls: L) -> L:
        cls.name = name
        return LOSSES.add(name, cls)

    return decorator


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_temperature(temperature: float) -> None:
    _check(temperature > 0, f"temperature must be positive, got {temperature}")


def _check_label_smoothing(label_smoothing: float) -> None:
    _check(0 <= label_smoothing < 1, f"label_smoothing must be in [0, 1), got {label_smoothing}")


def _check_weights(**weights: float) -> None:
    for key, value in weights.items():
        _check(math.isfinite(value) and value >= 0, f"{key} must be a finite number >= 0, got {value}")


def _resize_to(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bilinear resize of the student's map to the teacher's grid. The teacher's map is the target and
    stays exactly as the teacher computed it; the resize is differentiable, so the student still gets
    the whole gradient."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@_register("ce")
class CrossEntropy(DistillLoss):
    """Cross-entropy with the labels, optionally label-smoothed (Szegedy et al., "Rethinking the
    Inception Architecture", 2016); the teacher is not used. Trains teachers and baselines, and adds
    the label term to losses that have none (`dkd`, `fitnet`, `at`, `rkd`, `sp`):

        L = −(1/N) Σ_n Σ_c q_nc · log softmax(s_n)_c,   q_n = (1 − ε) · onehot(y_n) + ε / C
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_label_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        return F.cross_entropy(outputs.student_logits, outputs.labels, label_smoothing=self.label_smoothing)


@_register("kd")
class HintonKD(DistillLoss):
    """Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015):

        L = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)

    with KL averaged over the batch. The T² keeps the soft term's gradient scale independent of T. The
    paper fixes no defaults; T = 4, α = 0.9 are common choices for image classification.
    """

    needs_teacher = True

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check(0 <= alpha <= 1, f"alpha must be in [0, 1], got {alpha}")
        _check_label_smoothing(label_smoothing)
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(outputs.student_logits / t, dim=1),
            F.log_softmax(self._teacher_logits(outputs) / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        hard = F.cross_entropy(outputs.student_logits, outputs.labels, label_smoothing=self.label_smoothing)
        return self.alpha * t**2 * soft + (1 - self.alpha) * hard


@_register("logit_mse")
class LogitMSE(DistillLoss):
    """Logit matching, Ba & Caruana, "Do Deep Nets Really Need to be Deep?" (2014): regress the
    teacher's logits (not its probabilities, so no temperature is needed):

        L = 1/(2N) · Σ_n ‖s_n − t_n‖²

    The sum runs over the C classes, so the scale grows with C; the paper trains on this term alone,
    so it has no other hyperparameter (compose it with `ce` to use the labels too).
    """

    needs_teacher = True

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        diff = outputs.student_logits - self._teacher_logits(outputs)
        return 0.5 * diff.pow(2).sum(dim=1).mean()


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) for each row, from log-probabilities."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)


@_register("dkd")
class DecoupledKD(DistillLoss):
    """Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation" (CVPR 2022). With
    b = [p_y, 1 − p_y] the binary (target, all others) probabilities at temperature T and p̂ the
    softmax over the non-target classes only, the classical KD term splits exactly as

        KL(p_T ‖ p_S) = KL(b_T ‖ b_S) + (1 − p_y,T) · KL(p̂_T ‖ p̂_S) = TCKD + (1 − p_y,T) · NCKD

    and DKD weights the two parts independently, freeing NCKD from the teacher's confidence:

        L = T² · (1/N) Σ_n (α · TCKD_n + β · NCKD_n)

    Defaults are the paper's CIFAR-100 setting: α = `tckd_weight` = 1, β = `nckd_weight` = 8, T = 4
    (ImageNet used α = 0.5, β = 0.5, T = 1). The label term is not included: compose with `ce`. The
    paper's 20-epoch linear warm-up of this term is left to the schedule.
    """

    needs_teacher = True

    def __init__(self, temperature: float = 4.0, tckd_weight: float = 1.0, nckd_weight: float = 8.0) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_weights(tckd_weight=tckd_weight, nckd_weight=nckd_weight)
        self.temperature, self.tckd_weight, self.nckd_weight = temperature, tckd_weight, nckd_weight

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        t = self.temperature
        student, teacher = outputs.student_logits / t, self._teacher_logits(outputs) / t
        target = F.one_hot(outputs.labels, student.shape[1]).bool()
        tckd = _kl_rows(_binary_log_probs(teacher, target), _binary_log_probs(student, target))
        nckd = _kl_rows(_non_target_log_probs(teacher, target), _non_target_log_probs(student, target))
        return t**2 * (self.tckd_weight * tckd + self.nckd_weight * nckd).mean()


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson's correlation of each row of `a` with the same row of `b`: the cosine of the centred rows.
    Each centred row is normalised with a floor of 1e-8 on its norm, so a row that does not vary
    correlates with nothing (0) instead of dividing 0 by 0."""
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (F.normalize(a, dim=1, eps=1e-8) * F.normalize(b, dim=1, eps=1e-8)).sum(dim=1)


@_register("dist")
class DIST(DistillLoss):
    """Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022):
    match the teacher's predictions up to their relations rather than exactly, with Pearson's ρ in
    place of KL. With Y_S = softmax(s/τ) and Y_T = softmax(t/τ) the batch's B × C probability matrices,

        L = β · τ² · (1 − (1/B) Σ_i ρ(Y_S[i,:], Y_T[i,:])) + γ · τ² · (1 − (1/C) Σ_j ρ(Y_S[:,j], Y_T[:,j]))

    the first term the inter-class relation (each image's ranking of the classes), the second the
    intra-class relation (each class's ranking of the batch's images). ρ is invariant to scaling and
    shifting its arguments, so a student need not reproduce a stronger teacher's confidence. Defaults
    are the paper's ImageNet setting and the authors' code (github.com/hunto/image_classification_sota,
    lib/models/losses/dist_kd.py): β = `inter_weight` = 1, γ = `intra_weight` = 1, τ = 1 (its CIFAR-100
    setting: β = γ = 2, τ = 4; under `edgekd fit` the shared `--temperature` sets τ). The label term
    (the paper's α · CE, α = 1) is not included: compose with `ce`. Where it deviates: the authors add
    1e-8 to the denominator of ρ; here each centred vector's norm is floored at 1e-8 instead, so ρ is
    exact whenever both vectors vary (and L exactly 0 for a student equal to the teacher). A vector that
    does not vary correlates with nothing: in a batch of one every class column is constant, and the
    intra-class term is its constant γ · τ², which carries no gradient.
    """

    needs_teacher = True

    def __init__(
        self, temperature: float = 1.0, inter_weight: float = 1.0, intra_weight: float = 1.0
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_weights(inter_weight=inter_weight, intra_weight=intra_weight)
        self.temperature, self.inter_weight, self.intra_weight = temperature, inter_weight, intra_weight

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        t = self.temperature
        student = F.softmax(outputs.student_logits / t, dim=1)
        teacher = F.softmax(self._teacher_logits(outputs) / t, dim=1)
        inter = 1 - _pearson_rows(student, teacher).mean()
        intra = 1 - _pearson_rows(student.t(), teacher.t()).mean()
        return t**2 * (self.inter_weight * inter + self.intra_weight * intra)


def _non_target_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Dropping the target column (rather than masking it with a large negative number) keeps the
    # non-target softmax exact.
    return logits[~target].view(logits.shape[0], logits.shape[1] - 1)


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log [p_y, 1 − p_y], with log(1 − p_y) from a logsumexp over the other classes: 1 − p_y underflows
    to 0 for a confident model, its logarithm does not."""
    total = torch.logsumexp(logits, dim=1)
    log_target = logits[target] - total
    log_rest = torch.logsumexp(_non_target_logits(logits, target), dim=1) - total
    return torch.stack([log_target, log_rest], dim=1)


def _non_target_log_probs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(_non_target_logits(logits, target), dim=1)


@_register("fitnet")
class FitNetHints(DistillLoss):
    """Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015): a learned regressor r maps the
    student's guided layer onto the teacher's hint layer, here a 1×1 convolution per tap pair:

        L = (1/J) Σ_j mean((resize(r_j(S_j)) − T_j)²)

    The paper sums ½ ‖·‖² over one hint and trains it as a separate first stage; here it is a term
    trained with the others, averaged over elements and taps so that its weight does not depend on map
    size or tap count (benchmarks such as CRD's weight this form by 100). When the grids differ, the
    adapted student map is resized bilinearly to the teacher's grid: the teacher's map is the target and
    stays as the teacher computed it, and the gradient flows through the resize to the student.
    """

    needs_teacher = True
    needs_features = True

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleList()

    def prepare(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        """(Re)build one freshly initialised 1×1 adapter per tap pair, student channels -> teacher's."""
        if len(student_channels) != len(teacher_channels) or not student_channels:
            raise EdgeKDError(
                f"fitnet needs one teacher tap per student tap, got {list(student_channels)} student and "
                f"{list(teacher_channels)} teacher channel counts."
            )
        self.adapters = nn.ModuleList(
            nn.Conv2d(s, t, kernel_size=1) for s, t in zip(student_channels, teacher_channels)
        )

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        pairs = self._feature_pairs(outputs)
        if len(self.adapters) != len(pairs):
            raise EdgeKDError(
                f"fitnet has {len(self.adapters)} adapters for {len(pairs)} tap pairs: call "
                "prepare(student_channels, teacher_channels) before training (DistillForward does)."
            )
        terms = [
            F.mse_loss(_resize_to(adapter(s), t.shape[-2:]), t)
            for adapter, (s, t) in zip(self.adapters, pairs)
        ]
        return torch.stack(terms).mean()


@_register("at")
class AttentionTransfer(DistillLoss):
    """Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017). The activation-based
    attention map of a layer A (C×H×W) is Q = vec(Σ_c |A_c|^p); student and teacher maps are compared
    after L2 normalisation:

        L = (β/2) · Σ_j (1/(N·H_j·W_j)) · Σ_n ‖Q_S,n^j/‖Q_S,n^j‖₂ − Q_T,n^j/‖Q_T,n^j‖₂‖₂²

    The paper's defaults: p = `power` = 2 and β = 1000 "divided by the number of elements in the
    attention map and batch size", which is the 1/(N·H·W) above (its eq. 2 prints the distance
    unsquared; the authors' code squares it, as here). Channels may differ between student and
    teacher; when the grids differ, the student's attention map is resized bilinearly to the teacher's
    (the teacher's stays the exact target). The normalisation makes the loss invariant to scaling A.
    """

    needs_teacher = True
    needs_features = True

    def __init__(self, beta: float = 1000.0, power: float = 2.0) -> None:
        super().__init__()
        _check_weights(beta=beta)
        _check(power > 0, f"power must be positive, got {power}")
        self.beta, self.power = beta, power

    def _attention(self, a: torch.Tensor, size: torch.Size) -> torch.Tensor:
        # A mean over channels instead of the paper's sum: identical after normalisation, and it keeps
        # |A|^p in range for wide layers.
        q = _resize_to(a.abs().pow(self.power).mean(dim=1, keepdim=True), size)
        return F.normalize(q.flatten(1), dim=1)

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        terms = [
            (self._attention(s, t.shape[-2:]) - self._attention(t, t.shape[-2:])).pow(2).mean()
            for s, t in self._feature_pairs(outputs)
        ]
        return self.beta / 2 * torch.stack(terms).sum()


def _relative_distances(diff: torch.Tensor) -> torch.Tensor:
    """ψ_D: pairwise distances divided by their mean over the N(N−1) pairs i ≠ j. A batch of one has
    no pairs: its only distance is 0 and stays 0 (the clamps avoid 0/0)."""
    distances = diff.norm(dim=2)
    n = diff.shape[0]
    return distances / (distances.sum() / max(n * (n - 1), 1)).clamp_min(1e-12)


def _angles(diff: torch.Tensor) -> torch.Tensor:
    """ψ_A: cos ∠(e_i, e_j, e_k) = ⟨(e_i − e_j)/‖·‖, (e_k − e_j)/‖·‖⟩ for every vertex j, as [j, i, k].
    Degenerate triplets (i = j or k = j) normalise a zero vector to zero and give 0 for both models."""
    unit = F.normalize(diff, dim=2)
    return unit @ unit.transpose(1, 2)


@_register("rkd")
class RelationalKD(DistillLoss):
    """Park, Kim, Lu & Cho, "Relational Knowledge Distillation" (CVPR 2019): match the structure of a
    batch of embeddings (student's s and teacher's t, any widths) rather than the embeddings themselves.
    With l_δ the Huber loss (δ = 1),

        ψ_D(t_i, t_j) = ‖t_i − t_j‖₂ / μ,   μ = mean over pairs i ≠ j of ‖t_i − t_j‖₂
        ψ_A(t_i, t_j, t_k) = ⟨(t_i − t_j)/‖t_i − t_j‖₂, (t_k − t_j)/‖t_k − t_j‖₂⟩
        L = λ_D · mean_{i,j} l_δ(ψ_D(s), ψ_D(t)) + λ_A · mean_{i,j,k} l_δ(ψ_A(s), ψ_A(t))

    The paper writes sums over pairs and triplets; the means over all N² pairs and N³ triplets are the
    authors' code, for which λ_D = `distance_weight` = 25 and λ_A = `angle_weight` = 50 were set (the
    paper's classification setting; its metric-learning runs used 1 and 2). Applied to the pooled
    pre-logit embeddings. Both terms are invariant to scaling, translating and rotating an embedding.
    """

    needs_teacher = True
    needs_embedding = True

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        _check_weights(distance_weight=distance_weight, angle_weight=angle_weight)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        student, teacher = self._embeddings(outputs)
        s_diff = student.unsqueeze(0) - student.unsqueeze(1)  # [j, i] = e_i − e_j
        t_diff = teacher.unsqueeze(0) - teacher.unsqueeze(1)
        distance = F.smooth_l1_loss(_relative_distances(s_diff), _relative_distances(t_diff))
        angle = F.smooth_l1_loss(_angles(s_diff), _angles(t_diff))
        return self.distance_weight * distance + self.angle_weight * angle


def _similarity(a: torch.Tensor) -> torch.Tensor:
    """G = row-normalised Q·Qᵀ for Q = A reshaped to N × (C·H·W)."""
    q = a.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


@_register("sp")
class SimilarityPreserving(DistillLoss):
    """Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019): inputs that the teacher
    represents alike should be represented alike by the student. For each tap pair, with Q the batch's
    activation maps reshaped to N × (C·H·W) and G = Q·Qᵀ normalised row by row (L2),

        L = γ · Σ_j (1/N²) · ‖G_T^j − G_S^j‖_F²

    γ = `gamma` = 3000, the paper's setting. G is N × N, so student and teacher maps may differ in
    channels and size; it is invariant to scaling a map and to permuting its channels.
    """

    needs_teacher = True
    needs_features = True

    def __init__(self, gamma: float = 3000.0) -> None:
        super().__init__()
        _check_weights(gamma=gamma)
        self.gamma = gamma

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        terms = [F.mse_loss(_similarity(s), _similarity(t)) for s, t in self._feature_pairs(outputs)]
        return self.gamma * torch.stack(terms).sum()


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
