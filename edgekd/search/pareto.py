"""The Pareto front: the points no other point beats on every objective at once.

A point `a` dominates `b` when it is no worse on every objective and strictly better on at least one.
The front is what a person choosing a student should look at: anything off it is beaten by
something on it. O(n² · k) is plenty for a few hundred candidates.

Example:
    >>> pareto_front([(1.0, 5.0), (2.0, 4.0), (3.0, 6.0)], minimize=(True, True))
    [0, 1]
"""

from __future__ import annotations

from collections.abc import Sequence


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
