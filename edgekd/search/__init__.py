"""Which student to distil for a target (or several): the space of candidates, the targets'
constraints with a reason for every rejection (`constraints`: one `CandidateAssessment` per
candidate, whatever the number of targets), the Pareto front of what is left (`pareto.front`, the one
front `fit` ranks on and `edgekd search` marks), the ranking of feasible candidates by short
distillation runs (`halving`, `evidence`) and the choice with its record (`select`).

Example:
    >>> from edgekd.search import pareto_front
    >>> # (latency ms, accuracy): the third is slower than the second and no more accurate
    >>> pareto_front([(1.0, 0.90), (2.0, 0.95), (3.0, 0.93)], minimize=(True, False))
    [0, 1]
"""

from edgekd.search.constraints import (
    CandidateAssessment,
    TargetAssessment,
    assess,
    choose_assistant,
    choose_student,
    latencies,
    latency_phrase,
    search_space,
)
from edgekd.search.pareto import front, pareto_front
from edgekd.search.select import (
    OBJECTIVES,
    SearchResult,
    entry_order,
    latency_load,
    prior_per_latency,
    select_student,
    write_search_csv,
)

__all__ = [
    "OBJECTIVES",
    "CandidateAssessment",
    "SearchResult",
    "TargetAssessment",
    "assess",
    "choose_assistant",
    "choose_student",
    "entry_order",
    "front",
    "latencies",
    "latency_load",
    "latency_phrase",
    "pareto_front",
    "prior_per_latency",
    "search_space",
    "select_student",
    "write_search_csv",
]
