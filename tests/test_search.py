import dataclasses

import pytest

from edgekd.catalog import Candidate, load_students
from edgekd.errors import NoFeasibleStudentError
from edgekd.search import assess, choose_student
from edgekd.targets import get_target


@pytest.mark.slow
def test_choice_is_the_largest_feasible_candidate():
    """The whole catalog at digits' 32 px (the size `fit` on digits assesses, so its later
    assessment reads this one's cached costs) against a pi5 whose budget half the catalog breaks."""
    candidates = load_students()
    assert len(candidates) >= 12
    predicted = sorted(
        a.per_target["pi5"].predicted_latency_ms for a in assess(candidates, [get_target("pi5")], 32, 10)
    )
    budget = predicted[len(predicted) // 2]
    pi5 = get_target("pi5")
    tight = dataclasses.replace(pi5, budgets=dataclasses.replace(pi5.budgets, latency_ms=budget))
    assessments = assess(candidates, [tight], 32, 10)
    for a in assessments:
        assert a.feasible == (a.per_target["pi5"].predicted_latency_ms <= budget)
        if not a.feasible:
            assert f"> budget {budget:g} ms" in a.reasons[0]
    chosen = choose_student(assessments)
    assert chosen.feasible and chosen.macs == max(a.macs for a in assessments if a.feasible)
    assert any(a.macs > chosen.macs for a in assessments)  # a bigger one was turned away


def test_no_feasible_candidate_names_every_reason():
    tight = dataclasses.replace(
        get_target("pi5"), budgets=dataclasses.replace(get_target("pi5").budgets, latency_ms=0.01)
    )
    assessments = assess([Candidate("lcnet_050"), Candidate("mobilenetv2_050")], [tight], 32, 10)
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
    (lcnet,) = assess([Candidate("lcnet_050")], [tight], 128, 10)
    assert not lcnet.feasible
    assert any("MB peak memory > budget 0.5 MB" in r for r in lcnet.reasons)
    assert any(r == "ops hardswish are not supported on pi5" for r in lcnet.reasons)
    assert lcnet.fallback_ops == ("pad",)  # reported, not a reason to reject
    assert lcnet.peak_memory_mb > 0.5
