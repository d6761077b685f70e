"""The order of the search's candidates: which enter successive halving first (`entry_order`,
`entrants`), and how each rung's trials are ranked by the user's objective (`rank_rung`).

The objectives (`OBJECTIVES`), each a rule for ranking one rung's trials:
- `retention`: the fastest candidates shown to keep `min_retention` of the rung's best score (the
  lower end of the score's 95 % interval reaches min_retention x best; the best itself always keeps
  it) go first, by latency; the rest follow by score. A short trial cannot reach the teacher's full
  accuracy, so a candidate is held against the best of its own rung, trained on the same budget.
  Shown, not merely not ruled out: on EuroSAT at 6,000 images the rule "the top of the interval
  reaches the bar" let tf_mobilenetv3_small_minimal_100 through (72.0 %, CI 70.6-73.3 %, against 97 %
  of ghostnet_100's 75.6 %), and its full training kept 94.3 % of the teacher's test accuracy where
  ghostnet_100 kept 97.7 % (benchmarks/results/search_eurosat.json). The best is a safe fallback
  already scored, so asking for proof costs speed only when the evidence cannot give it.
- `latency`: the fastest candidates whose score is clearly above chance (the lower end of its
  interval above the largest class's share of the validation labels), then the rest by score.
- `accuracy`: by score. Scores whose 95 % intervals overlap are tied (the overlap rule, stricter
  than an interval of the difference, so a tie is never missed): a tie goes to the higher ImageNet
  top-1 per unit latency (candidates without a prior after those with one), then to the faster.

"Latency", with several targets, is the worst ratio of predicted latency to budget over the targets
(`latency_load`): the student must fit each, so the target it loads most decides.

Example:
    >>> from edgekd.search.ranking import OBJECTIVES, check_objective
    >>> OBJECTIVES
    ('retention', 'accuracy', 'latency')
    >>> check_objective("retention", 0.97)  # a known objective and a floor in (0, 1]: no error
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgekd.errors import ConfigError
from edgekd.search.constraints import CandidateAssessment, latencies
from edgekd.search.halving import Trial
from edgekd.search.pareto import front

OBJECTIVES = ("retention", "accuracy", "latency")
DEFAULT_MIN_RETENTION = 0.97


def capacity(a: CandidateAssessment) -> tuple[int, int]:
    """What "the most capacity" means when no evidence decides: MACs, then parameters."""
    return a.macs, a.params


def most_capacity(candidates: Sequence[CandidateAssessment]) -> CandidateAssessment:
    """The candidate with the most capacity the target affords (`capacity`): the choice without trials."""
    return max(candidates, key=capacity)


def latency_load(a: CandidateAssessment) -> float:
    """How hard `a` presses on its latency budgets: the worst ratio of predicted latency to budget
    over its targets (1.0 = at a budget). A target without a budget counts its latency in ms."""
    return max(
        x.predicted_latency_ms / x.budget_ms if math.isfinite(x.budget_ms) else x.predicted_latency_ms
        for x in a.per_target.values()
    )


def prior_per_latency(a: CandidateAssessment) -> float | None:
    """The published ImageNet top-1 (percent) per unit of `latency_load`: the capacity a candidate
    is expected to bring for the time it costs. None without a prior."""
    top1 = a.candidate.imagenet_top1
    if top1 is None:
        return None
    return top1 / max(latency_load(a), 1e-12)


def speed_key(a: CandidateAssessment) -> tuple[float, float]:
    """Fastest first: the worst budget ratio, then the total predicted latency."""
    return latency_load(a), sum(latencies(a))


def prior_key(a: CandidateAssessment) -> tuple[bool, float, float, float]:
    """Highest prior per latency first; candidates without a prior after those with one, fastest first."""
    prior = prior_per_latency(a)
    return (prior is None, -(prior or 0.0), *speed_key(a))


def entry_order(feasible: Sequence[CandidateAssessment]) -> list[CandidateAssessment]:
    """Feasible candidates front by front (`front`: predicted latency on each target ↓, peak memory ↓,
    MACs ↑, the front `edgekd search` marks), each front peeled off before the next; within a front,
    by ImageNet top-1 per unit latency (`prior_per_latency`), highest first. Candidates without a
    prior follow those with one in their front, spread over capacity: the most MACs first, then each
    next one the farthest (in log MACs) from those taken. With a trial budget of N, the N that enter
    are those the prior expects most of per millisecond, which is what a choice that favours fast
    students needs to have seen."""
    # `front` leaves the infeasible off, so they would never be peeled off and the loop never end.
    left = [a for a in feasible if a.feasible]
    ordered: list[CandidateAssessment] = []
    while left:
        members = front(left)
        with_prior = sorted((a for a in members if a.candidate.imagenet_top1 is not None), key=prior_key)
        ordered += with_prior + _spread_by_macs([a for a in members if a.candidate.imagenet_top1 is None])
        taken = {id(a) for a in members}
        left = [a for a in left if id(a) not in taken]
    return ordered


def entrants(ordered: Sequence[CandidateAssessment], trials: int | None) -> list[CandidateAssessment]:
    """The first `trials` of the entry order, with the last slot kept for a reference: the candidate
    the prior expects the most accuracy from (highest ImageNet top-1, then most MACs) among those of at
    most the median MACs. The entry order favours fast students, and retention is judged against the
    best score of a rung: without one capable candidate a rung would hold small students only, with
    nothing to show what they give up. The median keeps the reference's trials as cheap as a middling
    candidate's: the most capable of all (fastvit_t8 on digits at 32 px) trained 4x slower than the
    students it was measuring."""
    if trials is None or trials >= len(ordered):
        return list(ordered)
    head = list(ordered[:trials])
    if trials < 2:
        return head
    median = sorted(a.macs for a in ordered)[(len(ordered) - 1) // 2]
    affordable = [a for a in ordered if a.macs <= median]
    reference = max(affordable, key=lambda a: (a.candidate.imagenet_top1 or -1.0, a.macs))
    return head if reference in head else [*head[:-1], reference]


def _spread_by_macs(layer: list[CandidateAssessment]) -> list[CandidateAssessment]:
    if not layer:
        return []
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


def evidence_front(feasible: Sequence[CandidateAssessment], trials: Sequence[Trial]) -> tuple[str, ...]:
    """Candidates of the first rung on the `front` with first-rung accuracy in place of MACs.
    The first rung is the only one every candidate ran, so its accuracies are the comparable ones."""
    first = {t.name: t.score for t in trials if t.rung == 0}
    return tuple(a.candidate.name for a in front(feasible, scores=first))


def check_objective(objective: str, min_retention: float) -> None:
    """Refuse an unknown objective or a retention floor outside (0, 1], naming the valid choices."""
    if objective not in OBJECTIVES:
        from edgekd._registry import did_you_mean

        raise ConfigError(
            f"unknown objective {objective!r} (--objective); choose retention (the fastest student that "
            f"keeps --min-retention of the best accuracy), accuracy (the most accurate) or latency (the "
            f"fastest clearly above chance).{did_you_mean(objective, list(OBJECTIVES))}"
        )
    number = isinstance(min_retention, int | float) and not isinstance(min_retention, bool)
    if not (number and 0 < min_retention <= 1):  # also refuses nan
        raise ConfigError(
            f"min_retention (--min-retention) is the share of the best accuracy a student must keep, "
            f"a number in (0, 1] such as 0.97; got {min_retention!r}."
        )


def _overlap(a: Trial, b: Trial) -> bool:
    """Two scores are tied when their 95 % intervals overlap."""
    return a.interval[0] <= b.interval[1] and b.interval[0] <= a.interval[1]


def tie_group(trials: Sequence[Trial]) -> list[Trial]:
    """The trials tied with the best score of `trials` (the best among them)."""
    best = max(trials, key=lambda t: t.score)
    return [t for t in trials if _overlap(t, best)]


def rank_within_noise(trials: Sequence[Trial], by_name: dict[str, CandidateAssessment]) -> list[str]:
    """By score, never by a difference inside the noise: the trials tied with the best go first, in
    order of prior per latency then latency (`prior_key`); then the same again on what is left."""
    left = list(trials)
    ranked: list[str] = []
    while left:
        group = tie_group(left)
        ranked += [t.name for t in sorted(group, key=lambda t: prior_key(by_name[t.name]))]
        left = [t for t in left if t not in group]
    return ranked


def has_intervals(trials: Sequence[Trial]) -> bool:
    return all(t.val_images for t in trials)


def passes_bar(objective: str, trial: Trial, best: float, min_retention: float, chance: float | None) -> bool:
    """Whether `trial` meets the objective's bar in its rung (`best`: the rung's best score)."""
    if objective == "retention":
        return trial.score >= best or trial.interval[0] >= min_retention * best
    return chance is None or trial.interval[0] > chance  # latency: clearly above chance


def rank_rung(
    trials: Sequence[Trial],
    by_name: dict[str, CandidateAssessment],
    objective: str,
    min_retention: float = DEFAULT_MIN_RETENTION,
    chance: float | None = None,
) -> list[str]:
    """One rung's candidates, best first by `objective` (see the module's docstring). Scores with no
    validation image count have no interval, so no retention or chance bar can be judged on them:
    they are ranked as for accuracy."""
    if objective == "accuracy" or not has_intervals(trials):
        return rank_within_noise(trials, by_name)
    best = max(t.score for t in trials)
    passing = [t for t in trials if passes_bar(objective, t, best, min_retention, chance)]
    rest = [t for t in trials if t not in passing]
    fastest = [t.name for t in sorted(passing, key=lambda t: speed_key(by_name[t.name]))]
    if objective == "retention" and len(fastest) > 1:
        # The rung's best goes on second: the next rung then still holds the score the fastest is
        # measured against, instead of judging small students only against each other.
        # (When the best is also the fastest it stays first.)
        leader = max(passing, key=lambda t: t.score).name
        if fastest[0] != leader:
            fastest.remove(leader)
            fastest.insert(1, leader)
    return fastest + rank_within_noise(rest, by_name)
