"""The Pareto front: the points no other point beats on every objective at once.

A point `a` dominates `b` when it is no worse on every objective and strictly better on at least one.
The front is what a person choosing a student should look at: anything off it is beaten by
something on it. O(n² · k) is plenty for a few hundred candidates.

`front` is the search's one front over assessed candidates: `fit` lets candidates enter its trials
front by front, records the front of its first-rung evidence, and `edgekd search` marks the same
front before anything trains.

Example:
    >>> pareto_front([(1.0, 5.0), (2.0, 4.0), (3.0, 6.0)], minimize=(True, True))
    [0, 1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgekd.search.constraints import CandidateAssessment, latencies


def dominates(a: Sequence[float], b: Sequence[float], minimize: Sequence[bool]) -> bool:
    """Whether `a` is no worse than `b` on every objective and better on one."""
    if not (len(a) == len(b) == len(minimize)):
        raise ValueError(f"points and objectives differ in length: {len(a)}, {len(b)}, {len(minimize)}")
    better = False
    for x, y, low in zip(a, b, minimize, strict=True):
        x, y = (x, y) if low else (-x, -y)
        if x > y:
            return False
        better = better or x < y
    return better


def pareto_front(points: Sequence[Sequence[float]], minimize: Sequence[bool]) -> list[int]:
    """Indices (ascending) of the points that no other point dominates; equal points all stay."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p, minimize) for j, q in enumerate(points) if j != i)
    ]


def front(
    assessments: Sequence[CandidateAssessment], scores: Mapping[str, float] | None = None
) -> list[CandidateAssessment]:
    """The feasible candidates (in their given order) that no other beats on predicted latency on
    each target ↓, peak memory ↓ and capacity ↑: MACs before any training, or the accuracy in
    `scores` (by candidate name) once there is evidence, over the candidates it scores. Infeasible
    candidates are never on it: no objective makes up for a broken budget."""
    pool = [a for a in assessments if a.feasible and (scores is None or a.candidate.name in scores)]
    if not pool:
        return []
    last = [a.macs if scores is None else scores[a.candidate.name] for a in pool]
    points = [(*latencies(a), a.peak_memory_mb, x) for a, x in zip(pool, last, strict=True)]
    minimize = (True,) * (len(points[0]) - 1) + (False,)
    return [pool[i] for i in pareto_front(points, minimize)]
