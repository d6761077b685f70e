"""The search's objectives on known answers: error bars on every trial (Wilson intervals checked
against scipy), ties inside the noise broken by the ImageNet prior per latency, the retention and
latency rules, the fallback when the evidence carries no noise estimate, the chance check with its
re-run and abandonment, the entry order by prior, and search.json/search.csv with the new fields.

The evaluations are fake (they return chosen scores): the ranking is the unit under test; the real
short distillations are tested in test_search_select.py."""

import csv
import json
import logging

import pytest
from scipy.stats import binomtest

from edgekd.catalog import Candidate
from edgekd.search import SearchResult, entry_order, select_student, write_search_csv
from edgekd.search.constraints import CandidateAssessment, TargetAssessment
from edgekd.search.halving import Budget, ValidationScore, wilson_interval
from edgekd.search.select import entrants, prior_per_latency

VAL_IMAGES = 300


def point(name, latency, top1=None, macs=10**6, memory=1.0, budget=10.0):
    """A feasible candidate on one target: its predicted latency (ms of a `budget` ms budget) and
    its ImageNet prior (None: no prior)."""
    candidate = Candidate(
        name,
        imagenet_top1=top1,
        imagenet_size=None if top1 is None else 224,
        imagenet_source="" if top1 is None else "test figure",
    )
    on_pi5 = TargetAssessment("pi5", latency, budget, 1.0, memory)
    return CandidateAssessment(candidate, 64, macs // 10, macs, {"pi5": on_pi5})


def scores(table, images=VAL_IMAGES):
    """An evaluate returning `table[name]` (a number, or a function of the rung) over `images`."""
    calls = []

    def evaluate(name, rung):
        calls.append((name, rung.epochs, rung.images))
        value = table[name](rung) if callable(table[name]) else table[name]
        return ValidationScore(value, images, teacher_agreement=value + 0.01, teacher_kl=0.5)

    evaluate.calls = calls
    return evaluate


def choose(assessments, evaluate, **options):
    settings = {"budget": Budget(), "max_epochs": 2, "max_images": 900, "target_name": "pi5"}
    return select_student(assessments, evaluate, **{**settings, **options})


@pytest.mark.parametrize("successes, n", [(0, 10), (3, 10), (10, 10), (49, 300), (273, 300), (812, 1000)])
def test_wilson_interval_equals_scipys(successes, n):
    expected = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(successes, n)
    # scipy uses the exact normal quantile (1.95996...), wilson_interval the customary 1.96
    assert low == pytest.approx(expected.low, abs=2e-5) and high == pytest.approx(expected.high, abs=2e-5)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_every_trial_records_its_interval_images_and_teacher_agreement():
    assessments = [point("a", 1.0, 60.0), point("b", 2.0, 70.0)]
    result = choose(assessments, scores({"a": 0.8, "b": 0.9}), objective="accuracy")
    for t in result.trials:
        assert t.val_images == VAL_IMAGES
        assert (t.ci_low, t.ci_high) == pytest.approx(wilson_interval(round(t.score * 300), 300))
        assert t.teacher_agreement == pytest.approx(t.score + 0.01) and t.teacher_kl == 0.5


def test_a_tie_inside_the_noise_goes_to_the_prior_per_latency_not_the_noisy_score():
    # 0.90 and 0.92 over 300 images: the intervals (86.1-92.9 %, 88.4-94.6 %) overlap. `quick` has
    # the lower score but 4x the prior per millisecond: it wins under the accuracy objective.
    assessments = [point("heavy", 8.0, 76.0), point("quick", 2.0, 64.0), point("weak", 1.0, 58.0)]
    evaluate = scores({"heavy": 0.92, "quick": 0.90, "weak": 0.50})
    result = choose(assessments, evaluate, objective="accuracy")
    assert result.chosen == "quick"
    assert "Objective accuracy: quick's validation accuracy (90.0 %, 95 % CI" in result.reason
    assert "tied within the noise (overlapping 95 % intervals) with heavy 92.0 %" in result.reason
    assert "most ImageNet top-1 per unit latency" in result.reason
    # Outside the noise the score decides, whatever the prior says.
    clear = choose(assessments, scores({"heavy": 0.97, "quick": 0.80, "weak": 0.50}), objective="accuracy")
    assert clear.chosen == "heavy" and "heavy had the best validation accuracy (97.0 %" in clear.reason
    # A tie without priors goes to the faster.
    plain = [point("heavy", 8.0), point("quick", 2.0), point("weak", 1.0)]
    untold = choose(plain, scores({"heavy": 0.92, "quick": 0.90, "weak": 0.50}), objective="accuracy")
    assert untold.chosen == "quick" and "of those it is the fastest" in untold.reason


def test_a_tie_decides_promotion_too():
    # Four enter, two go on: heavy (0.93) and mid (0.91) and quick (0.90) are tied; of them quick and
    # mid have the most prior per latency, so heavy leaves after the first rung despite its score.
    assessments = [
        point("heavy", 8.0, 76.0),
        point("mid", 3.0, 70.0),
        point("quick", 2.0, 64.0),
        point("weak", 1.0, 58.0),
    ]
    result = choose(assessments, scores({"heavy": 0.93, "mid": 0.91, "quick": 0.90, "weak": 0.5}))
    assert [t.name for t in result.rung(1)] == ["quick", "mid"]
    assert result.accuracies("heavy")[1:] == [None]


def test_retention_picks_the_fastest_candidate_shown_to_keep_the_share_of_the_best():
    # Rung 1 on 4,050 validation images (intervals of about +-0.8 points): best 0.95, bar 0.97 x 0.95 =
    # 92.15 %. fastest (0.80) fails; second's 92.5 % is above the bar but the low end of its interval
    # (91.7 %) is not, so it is not shown to keep it; mid (93.5 %, low end 92.7 %) is. mid goes on with
    # the rung's best, heavy, the reference the next rung is measured against; in rung 2 mid passes again.
    assessments = [
        point("fastest", 0.5, 58.0),
        point("second", 1.0, 60.0),
        point("mid", 3.0, 70.0),
        point("heavy", 8.0, 76.0),
    ]
    table = {"fastest": 0.80, "second": 0.925, "mid": 0.935, "heavy": 0.95}
    low, high = wilson_interval(round(0.935 * 4050), 4050)
    result = choose(assessments, scores(table, images=4050), objective="retention", min_retention=0.97)
    assert result.chosen == "mid"
    assert wilson_interval(round(0.925 * 4050), 4050)[0] < 0.97 * 0.95 <= low
    assert result.reason.startswith(
        "Objective retention: mid is the fastest candidate shown to keep 97 % of the best in rung 2 "
        "(heavy, 95.0 %; 1 epoch on 600 training images): its validation accuracy (93.5 %, 95 % CI "
        f"{100 * low:.1f}–{100 * high:.1f} %, 4050 images) reaches 92.2 % even at the low end of its "
        "interval (successive halving over 4 of the 4 candidates that fit pi5; search "
    )
    assert result.reason.endswith("and is predicted at 3.00 ms of the 10 ms budget.")
    assert (result.objective, result.min_retention) == ("retention", 0.97)
    # A stricter floor: only heavy is shown to keep it; a looser one lets second through.
    assert (
        choose(assessments, scores(table, images=4050), objective="retention", min_retention=0.995).chosen
        == "heavy"
    )
    assert (
        choose(assessments, scores(table, images=4050), objective="retention", min_retention=0.9).chosen
        == "second"
    )
    # Where the faster candidates reach the deciding rung, the sentence names the closest of them.
    three = choose(assessments[1:], scores(table, images=4050), objective="retention", min_retention=0.97)
    assert three.chosen == "mid"
    assert "; faster, not shown to keep 92.2 %: second (92.5 %, 95 % CI " in three.reason


def test_retention_keeps_the_fastest_first_when_it_is_also_the_best():
    # make fit's digits search: lcnet_035 was both the fastest and the best of its rung, and moving the
    # rung's best to second place demoted it below the slower lcnet_050 that only its interval kept in.
    assessments = [point("best-fast", 0.5, 58.0), point("slower", 1.0, 63.0), point("ref", 2.0, 72.0)]
    table = {"best-fast": 0.77, "slower": 0.70, "ref": 0.75}
    result = choose(assessments, scores(table, images=269), objective="retention", min_retention=0.97)
    assert result.chosen == "best-fast"
    assert result.reason.startswith(
        "Objective retention: best-fast is both the fastest candidate shown to keep 97 % of the best and "
        "the best itself in rung 1 (1 epoch on 600 training images): validation accuracy 77.0 %"
    )
    # On 269 images (intervals of about +-5 points) a candidate half a point under the best is not shown
    # to keep 97 % of it: the best, ref, is chosen, and the sentence says how close best-fast came.
    close = choose(
        assessments, scores({**table, "ref": 0.77, "best-fast": 0.765}, images=269), objective="retention"
    )
    assert close.chosen == "ref" and "not shown to keep 74.7 %: best-fast (76.5 %" in close.reason


def test_latency_picks_the_fastest_candidate_clearly_above_chance():
    # chance 10 %: fastest's 11 % (CI 7.9-15.0 %) is not clearly above it; second's 40 % is.
    assessments = [point("fastest", 0.5, 58.0), point("second", 1.0, 60.0), point("heavy", 8.0, 76.0)]
    table = {"fastest": 0.11, "second": 0.40, "heavy": 0.95}
    result = choose(assessments, scores(table), objective="latency", chance=0.10)
    assert result.chosen == "second"
    assert result.reason.startswith(
        "Objective latency: second is the fastest candidate whose validation accuracy (40.0 %, 95 % CI"
    )
    assert (
        "clearly above chance (10.0 %, the largest class's share) in rung 1 (1 epoch on 600" in result.reason
    )
    assert choose(assessments, scores(table), objective="accuracy", chance=0.10).chosen == "heavy"


def test_scores_without_an_image_count_fall_back_to_the_most_accurate_and_say_so():
    assessments = [point("fast", 0.5, 58.0), point("slow", 8.0, 76.0)]

    def bare(name, rung):  # a plain accuracy: no interval can be drawn around it
        return {"fast": 0.90, "slow": 0.95}[name]

    for objective in ("retention", "latency"):
        result = choose(assessments, bare, objective=objective)
        assert result.chosen == "slow", objective
        assert result.reason.startswith(
            f"Objective {objective}: the trials gave no validation image count, so the noise in their "
            "scores is unknown; falling back to the most accurate: slow had the best validation accuracy "
            "(95.0 %) in rung 1"
        )


def test_chance_scores_are_run_again_longer_then_the_search_is_abandoned_for_the_prior(caplog):
    assessments = [
        point("fast", 0.5, 58.0),  # prior per latency: 58 / (0.5 / 10) = 1160
        point("balanced", 1.0, 70.0),  # 700
        point("heavy", 8.0, 76.0),  # 95
        point("unknown", 0.2),  # the fastest, but no prior: not chosen by prior
    ]
    evaluate = scores({"fast": 0.10, "balanced": 0.12, "heavy": 0.11, "unknown": 0.09})
    with caplog.at_level(logging.WARNING, logger="edgekd.search.select"):
        result = choose(
            assessments, evaluate, objective="retention", chance=0.10, max_images=400, available_images=2000
        )
    # rung 1 as planned (1 epoch on 64 images), then again with 2 epochs on 128 images
    first = [c for c in evaluate.calls if c[0] == "balanced"]
    assert len(first) == 2 and first[1][1] == 2 * first[0][1] and first[1][2] == 2 * first[0][2]
    assert len(evaluate.calls) == 8 and {t.rung for t in result.trials} == {0}  # no later rung ran
    assert sum(t.retry for t in result.trials) == 4
    assert result.at_chance and result.chosen == "fast" and result.front == ()
    assert result.reason.startswith(
        "Objective retention: trial scores stayed at chance (best 12.0 %, CI 8.8–16.2 %, chance 10.0 %) "
        "after the first rung ran again with twice the epochs and images"
    )
    assert "fast chosen by ImageNet prior per unit latency (58 % top-1 at 224 px)" in result.reason
    assert any(r.levelname == "WARNING" and "stayed at chance" in r.getMessage() for r in caplog.records)
    # The record says so after a round trip too.
    again = SearchResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result and again.at_chance


def test_a_rung_at_chance_that_learns_when_run_longer_goes_on_at_the_longer_budget():
    assessments = [point("fast", 0.5, 58.0), point("mid", 1.0, 70.0), point("heavy", 8.0, 76.0)]

    def learns_with_time(base):
        return lambda rung: base if rung.epochs >= 2 else 0.1

    evaluate = scores(
        {name: learns_with_time(b) for name, b in (("fast", 0.6), ("mid", 0.9), ("heavy", 0.92))}
    )
    result = choose(assessments, evaluate, objective="accuracy", chance=0.1, max_epochs=3, max_images=300)
    # mid (0.90) and heavy (0.92) are tied; mid has 7x heavy's prior per latency
    assert not result.at_chance and result.chosen == "mid"
    retried = result.rung(0)
    assert all(t.retry and t.epochs == 2 for t in retried)
    assert all(t.epochs >= 2 for r in range(1, result.rungs) for t in result.rung(r))
    assert result.accuracies("fast")[0] == pytest.approx(0.6)  # the retry's score, not the first attempt's


def test_entry_order_ranks_each_layer_by_prior_per_latency():
    layer = [
        point("big", 9.0, 76.0, macs=10**9, memory=9.0),  # 8.4 per ms
        point("small", 1.0, 58.0, macs=10**6, memory=1.0),  # 58
        point("mid", 3.0, 72.0, macs=3 * 10**7, memory=3.0),  # 24
        point("mystery", 2.0, None, macs=2 * 10**7, memory=2.0),  # no prior: after those with one
        point("dominated", 9.5, 80.0, macs=10**8, memory=9.5),  # slower, larger, fewer MACs than big
    ]
    order = [a.candidate.name for a in entry_order(layer)]
    assert order == ["small", "mid", "big", "mystery", "dominated"]
    assert prior_per_latency(layer[1]) == pytest.approx(58.0 / (1.0 / 10.0))
    assert prior_per_latency(layer[3]) is None


def test_search_json_round_trips_the_new_fields_and_an_older_record_still_loads(tmp_path):
    assessments = [point("a", 1.0, 60.0), point("b", 2.0, 70.0), point("c", 4.0, 72.0)]
    result = choose(assessments, scores({"a": 0.7, "b": 0.9, "c": 0.91}), objective="retention", chance=0.1)
    saved = json.loads(json.dumps(result.to_json()))
    assert saved["objective"] == "retention" and saved["chance"] == 0.1
    assert {"val_images", "ci_low", "ci_high", "teacher_agreement", "teacher_kl"} <= set(saved["trials"][0])
    assert SearchResult.from_json(saved) == result

    older = {  # a search.json written before objectives and error bars
        "chosen": "b",
        "reason": "b had the best validation accuracy (90.0 %) in rung 2 of successive halving.",
        "trials": [
            {
                "name": n,
                "rung": 0,
                "epochs": 1,
                "images": 100,
                "score": s,
                "seconds": 1.0,
                "mac_images": 3e8,
                "reused": False,
            }
            for n, s in (("a", 0.7), ("b", 0.9))
        ],
        "entered": ["a", "b"],
        "front": ["a", "b"],
        "stopped_early": False,
        "seconds": 2.0,
        "mac_images": 6e8,
    }
    loaded = SearchResult.from_json(older)
    assert loaded.chosen == "b" and loaded.objective == "accuracy" and not loaded.at_chance
    assert loaded.trials[0].val_images is None and loaded.trials[0].interval == (0.7, 0.7)
    write_search_csv(tmp_path / "old.csv", assessments, loaded)  # an old record still writes its CSV
    with open(tmp_path / "old.csv") as f:
        rows = {r["arch"]: r for r in csv.DictReader(f)}
    assert rows["b"]["rung0_val_accuracy"] == "0.9000" and rows["b"]["rung0_ci95_low"] == ""


def test_search_csv_has_each_rungs_interval_and_teacher_agreement(tmp_path):
    assessments = [point("a", 1.0, 60.0), point("b", 2.0, 70.0)]
    result = choose(assessments, scores({"a": 0.7, "b": 0.9}), objective="accuracy")
    write_search_csv(tmp_path / "search.csv", assessments, result)
    with open(tmp_path / "search.csv") as f:
        rows = {r["arch"]: r for r in csv.DictReader(f)}
    low, high = wilson_interval(270, 300)
    b = rows["b"]
    assert (float(b["rung0_ci95_low"]), float(b["rung0_ci95_high"])) == pytest.approx((low, high), abs=1e-4)
    assert float(b["rung0_teacher_agreement"]) == pytest.approx(0.91)


def test_chance_level_is_the_largest_class_share_of_the_validation_labels(digits):
    from collections import Counter

    from edgekd.data import stack
    from edgekd.search.evidence import chance_level

    labels = [int(y) for y in stack(digits.val)[1]]
    assert chance_level(digits.val) == max(Counter(labels).values()) / len(labels)
    assert 0.09 < chance_level(digits.val) < 0.12  # ten nearly balanced classes


def test_objective_and_min_retention_reach_fit_config_from_yaml(tmp_path):
    from edgekd.errors import ConfigError
    from edgekd.pipeline import FitConfig

    path = tmp_path / "fit.yaml"
    path.write_text("objective: latency\nmin_retention: 0.9\n")
    config = FitConfig.from_yaml(path)
    assert (config.objective, config.min_retention) == ("latency", 0.9)
    assert (FitConfig().objective, FitConfig().min_retention) == ("retention", 0.97)
    path.write_text("objective: speed\n")
    with pytest.raises(ConfigError, match=r"unknown objective 'speed'.*Valid: accuracy, latency, retention"):
        FitConfig.from_yaml(path)


def test_the_last_entry_slot_goes_to_the_most_capable_candidate():
    # The entry order favours fast students; a budget of 3 keeps the first two and gives its last slot
    # to the highest ImageNet prior, so retention has something capable to be measured against.
    # Of at most the median MACs: "huge" (the highest prior, the most MACs) is too costly a reference.
    ordered = [
        point("a", 1.0, 60.0, macs=10**6),
        point("b", 2.0, 62.0, macs=2 * 10**6),
        point("c", 3.0, 64.0, macs=3 * 10**6),
        point("big", 8.0, 80.0, macs=3 * 10**6),
        point("huge", 20.0, 82.0, macs=20 * 10**6),
    ]
    assert [x.candidate.name for x in entrants(ordered, 3)] == ["a", "b", "big"]
    assert [x.candidate.name for x in entrants(ordered, 2)] == ["a", "big"]
    assert [x.candidate.name for x in entrants(ordered, 1)] == ["a"]  # one trial: no room for a reference
    assert entrants(ordered, None) == entrants(ordered, 9) == ordered
    # Already among the first: nothing is replaced.
    first = [point("big", 8.0, 80.0), point("a", 1.0, 60.0), point("b", 2.0, 62.0)]
    assert [x.candidate.name for x in entrants(first, 2)] == ["big", "a"]


def test_every_rung_after_a_retried_one_trains_at_least_as_long_as_the_retry():
    # Two rungs (4 -> 2, 1/1 epochs as planned; the lone winner's 3-epoch rung is the final training):
    # after the first rung's retry at 2 epochs the second rung must not fall back to its planned 1 epoch
    # and reuse the at-chance first attempts.
    assessments = [
        point(n, lat, top) for n, lat, top in (("a", 0.5, 58.0), ("b", 1.0, 62.0), ("c", 2.0, 66.0))
    ]
    assessments.append(point("d", 4.0, 70.0))

    def learns_with_time(base):
        return lambda rung: base if rung.epochs >= 2 else 0.1

    evaluate = scores({n: learns_with_time(b) for n, b in (("a", 0.5), ("b", 0.7), ("c", 0.9), ("d", 0.95))})
    result = choose(assessments, evaluate, objective="accuracy", chance=0.1, max_epochs=3, max_images=300)
    assert result.rungs == 2
    middle = result.rung(1)
    assert len(middle) == 2 and all(t.epochs >= 2 and t.score > 0.1 and not t.reused for t in middle)
