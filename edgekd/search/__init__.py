"""Which student to distil for a target (or several): the space of candidates, the target's
constraints with a reason for every rejection (`constraints`), the Pareto front of what is left
(`pareto`), and the ranking of feasible candidates by short distillation runs (`halving`).

Example:
    >>> # assessments = assess(load_students(), get_target("pi5"), 64, 10)
    >>> # front = pareto_front([objectives(a) for a in assessments if a.feasible])
"""

from edgekd.search.constraints import (
    Assessment,
    JointAssessment,
    assess,
    assess_one,
    assess_targets,
    choose_assistant,
    choose_student,
    search_space,
    write_search_csv,
)
from edgekd.search.pareto import pareto_front

__all__ = [
    "Assessment",
    "JointAssessment",
    "assess",
    "assess_one",
    "assess_targets",
    "choose_assistant",
    "choose_student",
    "pareto_front",
    "search_space",
    "write_search_csv",
]
