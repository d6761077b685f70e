"""The training plan (`edgekd.training_time`): measured rates, predicted search and final-training
seconds, and `--time-budget`'s split, on real tiny timm models at 32 px and the digits data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.helpers import one_torch_thread

FAST, OTHER_FAST, SLOW = "lcnet_050", "mobilenetv3_small_050", "efficientnet_lite0"
DRAWS = 4  # FitConfig's default augment_draws: the teacher-output cache holds 4 views per image
# Named in every config here: on digits fit would decide 16 (default_batch_size); the rates are 64's.
BATCH = 64


@pytest.fixture(scope="module")
def rates_cache(tmp_path_factory) -> Path:
    """One rate cache for the plan tests: each rate is measured once for the module."""
    return tmp_path_factory.mktemp("rates")


@pytest.fixture(scope="module")
def teacher():
    from edgekd.catalog import build_model

    return build_model("mobilenetv3_small_050", 10).eval()


def _assessments(*names: str):
    from edgekd.catalog import load_students, student_registry
    from edgekd.search import assess
    from edgekd.targets import get_target

    registry = student_registry(load_students())
    return assess([registry.get(n) for n in names], [get_target("pi5")], 32, 10)


def _plan(config, names, teacher, digits, cache: Path, **options):
    from edgekd.fit_recipe import make_distill_plan, make_train_config, with_data_defaults
    from edgekd.targets import get_target
    from edgekd.training_time import plan_fit

    config = with_data_defaults(config, len(digits.train))  # as fit decides them before planning
    with one_torch_thread():
        return plan_fit(
            config,
            _assessments(*names),
            teacher,
            "test-teacher",
            digits,
            make_train_config(config, 32),
            make_distill_plan(config, [get_target("pi5")]),
            cache,
            **options,
        )


def _rates(names, teacher, cache: Path):
    """The cached rates the plan used, read back (a second call measures nothing)."""
    from edgekd.training_time import forward_rate, student_rates

    with one_torch_thread():
        students = {n: student_rates(n, {}, 32, 10, BATCH, cache_dir=cache) for n in names}
        return students, forward_rate(teacher, "test-teacher", 32, cache_dir=cache)


def test_the_training_rate_is_measured_once_then_read_from_the_cache(tmp_path):
    from edgekd.training_time import student_rates, training_rate

    with one_torch_thread():
        first = student_rates(FAST, {}, 32, 10, 64, cache_dir=tmp_path)
        (entry,) = (tmp_path / "training-rates").rglob("*.json")
        written = entry.stat().st_mtime_ns
        again = training_rate(FAST, {}, 32, 10, 64, cache_dir=tmp_path)
        other_batch = student_rates(FAST, {}, 32, 10, 32, cache_dir=tmp_path)
    assert first.train > 0 and first.evaluate > first.train  # a forward is cheaper than a step
    assert again == first.train and entry.stat().st_mtime_ns == written
    assert json.loads(entry.read_text()) == {"train": first.train, "evaluate": first.evaluate}
    assert len(list((tmp_path / "training-rates").rglob("*.json"))) == 2  # the batch size is in the key
    assert other_batch != first


def test_predicted_seconds_are_rungs_times_measured_rates(rates_cache, teacher, digits):
    from edgekd.pipeline import FitConfig

    config = FitConfig.from_options(
        target="pi5", search_budget="2", epochs=10, search_epochs=2, batch_size=BATCH, cache_dir=rates_cache
    )
    timing = _plan(config, [FAST, OTHER_FAST], teacher, digits, rates_cache)
    rates, teacher_rate = _rates([FAST, OTHER_FAST], teacher, rates_cache)
    train, val = len(digits.train), len(digits.val)
    assert (train, val) == (1259, 269)
    # One rung: 2 candidates x 2 epochs on all 1,259 images (--search-epochs 2, as SEARCH_MIN_STEPS of
    # 64 would need more, capped at the full budget's; distinct images are spent before epochs). The
    # lone winner's rung (1 x 2 x all 1259) is not run: the final training is that run.
    assert [(r.candidates, r.epochs, r.images) for r in timing.rungs] == [(2, 2, train)]

    def trial(name, epochs, images):
        r = rates[name]
        return epochs * images / r.train + epochs * val / r.evaluate + val / teacher_rate

    first = trial(FAST, 2, train) + trial(OTHER_FAST, 2, train)
    assert timing.predicted_search == pytest.approx(first + DRAWS * train / teacher_rate, rel=1e-9)
    assert timing.predicted_search_range == pytest.approx((timing.predicted_search,) * 2)
    # The rung ran on all the images, so the final training reads the cache entry it filled.
    final = {n: trial(n, 10, train) for n in (FAST, OTHER_FAST)}
    assert timing.predicted_final == pytest.approx(final)
    assert timing.entering == (FAST, OTHER_FAST) or timing.entering == (OTHER_FAST, FAST)
    assert timing.search_budget == "2" and timing.epochs == 10  # no time budget: nothing changes
    assert "training plan:" in timing.table and "2x2x1259 (" in timing.table


def test_full_trainings_are_planned_fastest_first_the_first_alone_to_all_of_them(
    rates_cache, teacher, digits
):
    from edgekd.pipeline import FitConfig
    from edgekd.search.confirm import confirmation_order
    from edgekd.training_time import FinalRecipe, Workload, final_seconds

    config = FitConfig.from_options(target="pi5", epochs=10, batch_size=BATCH, cache_dir=rates_cache)
    names = [FAST, SLOW, OTHER_FAST]
    timing = _plan(config, names, teacher, digits, rates_cache, confirm=True)
    order = [a.candidate.name for a in confirmation_order(_assessments(*names))]
    rates, teacher_rate = _rates(names, teacher, rates_cache)
    work = Workload(len(digits.val), DRAWS, True, teacher_rate)
    each = {
        n: final_seconds(rates[n], work, FinalRecipe(10, 0, len(digits.train), 1, False, False))
        for n in order
    }
    assert timing.mode == "confirm" and timing.entering == tuple(order) and timing.rungs == ()
    # the figure between the first alone and all three: either outcome within 2x of it
    assert timing.predicted_search == pytest.approx((each[order[0]] * sum(each.values())) ** 0.5, rel=1e-9)
    assert timing.predicted_search_range == pytest.approx((each[order[0]], sum(each.values())), rel=1e-9)
    # The passing training is the final student: nothing is left to train after the search.
    assert timing.predicted_final == dict.fromkeys(order, 0.0)
    assert (
        "full trainings (10 epochs x 1259 images), fastest first (the last slot kept for a capable "
        "reference), up to 3" in timing.table
    )
    assert "none: the search's full training is the final student" in timing.table


def test_the_plan_counts_the_epochs_small_data_decide(rates_cache, teacher, digits):
    from edgekd.fit_recipe import default_epochs
    from edgekd.pipeline import FitConfig

    # no --epochs: digits' 1,259 images are small data, trained until the student has seen the
    # minimum of images, and the plan of the full trainings says so
    config = FitConfig.from_options(target="pi5", batch_size=BATCH, cache_dir=rates_cache)
    timing = _plan(config, [FAST], teacher, digits, rates_cache, confirm=True)
    epochs = default_epochs(len(digits.train))
    assert timing.epochs == epochs > 15
    assert f"full trainings ({epochs} epochs x 1259 images)" in timing.table


def test_a_budget_too_small_for_the_slow_candidate_drops_it_by_name(rates_cache, teacher, digits, caplog):
    from edgekd.pipeline import FitConfig
    from edgekd.training_time import FinalRecipe, Workload, final_seconds

    rates, teacher_rate = _rates([FAST, SLOW], teacher, rates_cache)
    work = Workload(len(digits.val), DRAWS, True, teacher_rate)
    alone = FinalRecipe(10, 0, len(digits.train), 1, False, False)
    fast, slow = (final_seconds(rates[n], work, alone) for n in (FAST, SLOW))
    assert slow > 2 * fast
    config = FitConfig.from_options(
        target="pi5",
        search_budget="2",
        epochs=10,
        batch_size=BATCH,
        time_budget=f"{(fast + slow) / 2:.2f}s",
        cache_dir=rates_cache,
    )
    with caplog.at_level(logging.WARNING, logger="edgekd.training_time"):
        timing = _plan(config, [SLOW, FAST], teacher, digits, rates_cache)
    assert f"dropped {SLOW} (" in caplog.text
    by_name = {a.candidate.name: a for a in timing.assessments}
    assert by_name[FAST].feasible and not by_name[SLOW].feasible
    assert "does not fit --time-budget" in by_name[SLOW].reasons[-1]
    # One candidate left: no trials, the search chooses it without training.
    assert [a.candidate.name for a in timing.search_assessments] == [FAST]
    assert timing.search_budget == "0" and timing.predicted_final == pytest.approx({FAST: fast})


def test_a_budget_too_small_for_any_cuts_the_epochs_or_refuses(rates_cache, teacher, digits, caplog):
    from edgekd.errors import ConfigError
    from edgekd.pipeline import FitConfig
    from edgekd.training_time import FinalRecipe, Workload, final_seconds

    rates, teacher_rate = _rates([FAST], teacher, rates_cache)
    work = Workload(len(digits.val), DRAWS, True, teacher_rate)
    ten = final_seconds(rates[FAST], work, FinalRecipe(10, 0, len(digits.train), 1, False, False))
    config = FitConfig.from_options(
        target="pi5", epochs=10, batch_size=BATCH, time_budget=f"{ten / 2:.3f}s", cache_dir=rates_cache
    )
    with caplog.at_level(logging.WARNING, logger="edgekd.training_time"):
        timing = _plan(config, [FAST], teacher, digits, rates_cache)
    assert 1 <= timing.epochs < 10 and f"trains {timing.epochs} of the 10 epochs" in caplog.text
    assert timing.predicted_final[FAST] <= ten / 2
    assert timing.search_config(config).training.epochs == timing.epochs
    tiny = FitConfig.from_options(
        target="pi5", epochs=10, batch_size=BATCH, time_budget="0.01s", cache_dir=rates_cache
    )
    with pytest.raises(ConfigError, match=rf"not even the fastest candidate, {FAST}, can train one epoch"):
        _plan(tiny, [FAST], teacher, digits, rates_cache)


def test_a_generous_budget_gives_the_search_its_share_as_wall_clock(rates_cache, teacher, digits):
    from edgekd.pipeline import FitConfig
    from edgekd.training_time import SEARCH_SHARE, report_line

    config = FitConfig.from_options(
        target="pi5", search_budget="2", epochs=10, batch_size=BATCH, time_budget="1h", cache_dir=rates_cache
    )
    timing = _plan(config, [FAST, OTHER_FAST], teacher, digits, rates_cache)
    assert timing.search_budget == f"{SEARCH_SHARE * 3600:.0f}s" and len(timing.entering) == 2
    assert {a.candidate.name for a in timing.search_assessments} == {FAST, OTHER_FAST}
    assert timing.search_config(config).search_budget == timing.search_budget
    assert timing.predicted_search < SEARCH_SHARE * 3600 and timing.epochs == 10
    record = timing.outcome(FAST, search_actual=40.0, final_actual=100.0)
    assert record["search"]["actual_s"] == 40.0 and record["final"]["actual_s"] == 100.0
    assert record["final"]["predicted_s"] == round(timing.predicted_final[FAST], 1)
    assert record["search_budget"] == "1080s" and record["time_budget_s"] == 3600
    (line,) = report_line(record)
    assert line.startswith("Training time under a time budget of 60.0 min: the search was predicted")
    assert "and took 40 s" in line and f"final training of {FAST} was predicted" in line


@pytest.mark.slow
def test_fit_logs_the_plan_and_keeps_predicted_and_actual_seconds(searched_fit):
    # test_search_select reads the same fit's search: 2 trials, 2 epochs, --time-budget 30m
    result, run, _, logged = searched_fit
    assert "training plan:" in logged and "predicted" in logged
    assert logged.index("training plan:") < logged.index("distil epoch 1")
    plan = result.plan
    assert plan["search"]["predicted_s"] > 0 and plan["search"]["actual_s"] > 0
    assert plan["final"]["candidate"] == result.student.arch
    assert plan["final"]["predicted_s"] > 0 and plan["final"]["actual_s"] > 0
    assert plan["time_budget_s"] == 1800 and plan["search_budget"].endswith("s")
    assert "Training time under a time budget of 30.0 min" in (run / "report.md").read_text()
    # The plan of every stage comes before the teacher trains, and each stage's time is kept beside it.
    planned_at = logged.index("plan (estimated wall time per stage)")
    assert planned_at < logged.index("teacher resnet18 epoch")
    planned = [s["stage"] for s in result.stages]
    assert planned[:6] == ["data", "costing", "rate probe", "teacher", "search", "distill"]
    assert {"export", "parity", "teacher latency", "report"} <= set(planned)
    assert all(s["actual_s"] is not None for s in result.stages)  # the report's too, written after it
    kept = json.loads((run / "result.json").read_text())["stages"]
    assert kept == result.stages and "stage times, estimated and actual" in logged


def test_the_plan_made_once_the_given_teacher_is_loaded_fills_the_rows_that_waited_for_it(
    rates_cache, teacher, digits
):
    """With a given teacher, the plan of every stage cannot time the search or the final training (the
    teacher's forward rate is measured once it is loaded): those rows wait, and the plan made then fills
    them, so that the comparison after the run has an estimate for each. They used to stay empty."""
    import statistics
    from types import SimpleNamespace

    from edgekd.fit_plan import training_rows_open, with_training_rows
    from edgekd.fit_recipe import make_distill_plan, with_data_defaults
    from edgekd.pipeline import FitConfig
    from edgekd.stage_plan import StageEstimate
    from edgekd.targets import get_target

    config = FitConfig.from_options(
        target="pi5", search_budget="2", epochs=10, search_epochs=2, batch_size=BATCH, cache_dir=rates_cache
    )
    timing = _plan(config, [FAST, OTHER_FAST], teacher, digits, rates_cache)
    waited = "estimated once the teacher is loaded"
    rows = [
        StageEstimate("data", "", 1.0, "rule"),
        StageEstimate("search", "", None, waited),
        StageEstimate("distill", "", None, waited),
        StageEstimate("export", "pi5", 25.0, "rule"),
    ]
    context = SimpleNamespace(
        config=with_data_defaults(config, len(digits.train)),
        data=digits,
        plan=make_distill_plan(config, [get_target("pi5")]),
        assessments=timing.assessments,
        cache_dir=rates_cache,
        estimates=rows,
    )
    assert training_rows_open(rows) and not training_rows_open([rows[0], rows[3]])
    with one_torch_thread():
        filled = with_training_rows(context, timing)
    assert [row.stage for row in filled] == ["data", "search", "distill", "export"]
    assert filled[0] is rows[0] and filled[3] is rows[3]
    assert filled[1].seconds == pytest.approx(timing.predicted_search)
    assert filled[2].seconds == pytest.approx(statistics.fmean(timing.predicted_final.values()))
    assert "2x2x1259" in filled[1].basis and not training_rows_open(filled)
