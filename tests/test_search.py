import dataclasses

import pytest

from edgekd.catalog import Candidate, load_students
from edgekd.errors import NoFeasibleStudentError
from edgekd.search import assess, choose_student
from edgekd.targets import get_target


def test_choice_is_the_largest_feasible_candidate():
    target = get_target("pi5")
    candidates = load_students()
    assert len(candidates) >= 6
    assessments = assess(candidates, target, 224, 10)
    # At 224 px resnet10t (~1.1 GMAC) is predicted over pi5's 33 ms budget; the rest fit.
    by_name = {a.candidate.arch: a for a in assessments}
    assert not by_name["resnet10t"].feasible and "budget" in by_name["resnet10t"].reasons[0]
    chosen = choose_student(assessments)
    assert chosen.feasible
    assert chosen.macs == max(a.macs for a in assessments if a.feasible)


def test_no_feasible_candidate_names_every_reason():
    tight = dataclasses.replace(
        get_target("pi5"), budgets=dataclasses.replace(get_target("pi5").budgets, latency_ms=0.01)
    )
    assessments = assess([Candidate("lcnet_050"), Candidate("mobilenetv2_050")], tight, 32, 10)
    with pytest.raises(
        NoFeasibleStudentError, match=r"lcnet_050: predicted .* ms > budget 0.01 ms; mobilenetv2_050"
    ):
        choose_student(assessments)


def test_peak_memory_and_unsupported_ops_are_reasons():
    from edgekd.targets import OpConstraints

    pi5 = get_target("pi5")
    tight = dataclasses.replace(
        pi5,
        budgets=dataclasses.replace(pi5.budgets, peak_ram_mb=0.5),
        ops=OpConstraints(unsupported=("hardswish",), fallback=("pad",)),
    )
    (lcnet,) = assess([Candidate("lcnet_050")], tight, 128, 10)
    assert not lcnet.feasible
    assert any("MB peak memory > budget 0.5 MB" in r for r in lcnet.reasons)
    assert any(r == "ops hardswish are not supported on pi5" for r in lcnet.reasons)
    assert lcnet.fallback_ops == ("pad",)  # reported, not a reason to reject
    assert lcnet.peak_memory_mb > 0.5
