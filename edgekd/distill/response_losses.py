"""Response-based distillation losses: terms on the student's logits, against the labels and the
teacher's logits (`ce`, `kd`, `logit_mse`, `dkd`, `dist`). Each cites its paper with the formula and says
where it deviates; `edgekd.distill.losses` registers them by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.loss_base import (
    DistillLoss,
    DistillOutputs,
    check_label_smoothing,
    check_temperature,
    check_weights,
    require,
)


class CrossEntropy(DistillLoss):
    """Cross-entropy with the labels, optionally label-smoothed (Szegedy et al., "Rethinking the
    Inception Architecture", 2016); the teacher is not used. Trains teachers and baselines, and adds
    the label term to losses that have none (`dkd`, `fitnet`, `at`, `rkd`, `sp`):

        L = −(1/N) Σ_n Σ_c q_nc · log softmax(s_n)_c,   q_n = (1 − ε) · onehot(y_n) + ε / C
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_label_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        return F.cross_entropy(outputs.student_logits, outputs.labels, label_smoothing=self.label_smoothing)


class HintonKD(DistillLoss):
    """Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015):

        L = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)

    with KL averaged over the batch. The T² keeps the soft term's gradient scale independent of T. The
    paper fixes no defaults; T = 4, α = 0.9 are common choices for image classification.

    `standardize` applies Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge Distillation"
    (CVPR 2024) to both sides of the KL term: each row of logits z becomes (z − mean(z)) / std(z)
    before the temperature, so the student matches the teacher's ranking of the classes without having
    to reproduce its logit range. The paper's CIFAR-100 setting is T = 2 with the soft term weighted
    9 and the label term 0.1 (`--loss ce:0.1 kd:9 --alpha 1 --temperature 2`). Where it deviates: std
    is the population standard deviation with a floor of 1e-7, so a constant row stays finite.
    """

    needs_teacher = True

    def __init__(
        self,
        temperature: float = 4.0,
        alpha: float = 0.9,
        label_smoothing: float = 0.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        check_temperature(temperature)
        require(0 <= alpha <= 1, f"alpha must be in [0, 1], got {alpha}")
        check_label_smoothing(label_smoothing)
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing
        self.standardize = standardize

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        t = self.temperature
        student, teacher = outputs.student_logits, self._teacher_logits(outputs)
        if self.standardize:
            student, teacher = _standardised(student), _standardised(teacher)
        soft = F.kl_div(
            F.log_softmax(student / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        hard = F.cross_entropy(outputs.student_logits, outputs.labels, label_smoothing=self.label_smoothing)
        return self.alpha * t**2 * soft + (1 - self.alpha) * hard


def _standardised(logits: torch.Tensor) -> torch.Tensor:
    """Each row's z-score (population std, floored at 1e-7)."""
    centred = logits - logits.mean(dim=1, keepdim=True)
    return centred / centred.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-7)


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
        check_temperature(temperature)
        check_weights(tckd_weight=tckd_weight, nckd_weight=nckd_weight)
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
        check_temperature(temperature)
        check_weights(inter_weight=inter_weight, intra_weight=intra_weight)
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
