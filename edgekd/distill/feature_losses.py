"""Feature- and relation-based distillation losses: terms on what the student computes before its
logits, at paired student and teacher taps (`fitnet`, `at`, `sp` on feature maps) or on the pooled
embeddings (`rkd`, the structure of the batch). Each cites its paper with the formula and says where it
deviates; `edgekd.distill.losses` registers them by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd.distill.loss_base import DistillLoss, DistillOutputs, check_weights, require
from edgekd.errors import EdgeKDError


def _resize_to(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bilinear resize of the student's map to the teacher's grid. The teacher's map is the target and
    stays exactly as the teacher computed it; the resize is differentiable, so the student still gets
    the whole gradient."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


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
        check_weights(beta=beta)
        require(power > 0, f"power must be positive, got {power}")
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
        check_weights(distance_weight=distance_weight, angle_weight=angle_weight)
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
        check_weights(gamma=gamma)
        self.gamma = gamma

    def forward(self, outputs: DistillOutputs) -> torch.Tensor:
        terms = [F.mse_loss(_similarity(s), _similarity(t)) for s, t in self._feature_pairs(outputs)]
        return self.gamma * torch.stack(terms).sum()
