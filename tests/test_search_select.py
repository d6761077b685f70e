"""The search's choice and its record: rung sizes with a floor on training, identical trials run once,
the order candidates enter in, the winner by last-rung evidence, search.json and search.csv, and a
fit that searches, reports the Pareto plot and does not search again on resume."""

import csv
import json
import math

import pytest

from edgekd.catalog import Candidate, load_students
from edgekd.errors import NoFeasibleStudentError
from edgekd.search import SearchResult, entry_order, select_student, write_search_csv
from edgekd.search.constraints import CandidateAssessment, TargetAssessment
from edgekd.search.halving import Budget, plan_rungs, successive_halving


def point(name, latency, memory, macs, reasons=()):
    return joint(name, macs, pi5=(latency, memory, 10.0, *reasons))


def joint(name, macs, **on):
    """A candidate on its targets: `on` maps a target to (latency, memory, budget[, reasons])."""
    per_target = {
        target: TargetAssessment(target, latency, budget, 1.0, memory, tuple(reasons))
        for target, (latency, memory, budget, *reasons) in on.items()
    }
    return CandidateAssessment(Candidate(name), 64, macs // 10, macs, per_target)


def test_a_floor_on_images_seen_lengthens_short_rungs_but_not_past_the_last():
    rungs = plan_rungs(8, eta=3, max_epochs=8, max_images=3000, min_images=1000, min_images_seen=3200)
    # rung 0: 8 x 3000 / 9 = 2,667 images seen, raised to the floor's 3,200: 2 epochs on 1,600 images;
    # rung 1: 8 x 3000 / 3 = 8,000 seen, 3 epochs on 2,667 images (as many distinct images as fit)
    assert [(r.candidates, r.epochs, r.images) for r in rungs] == [(8, 2, 1600), (3, 3, 2667)]
    tiny = plan_rungs(4, eta=3, max_epochs=3, max_images=500, min_images=1000, min_images_seen=10**6)
    assert {(r.epochs, r.images) for r in tiny} == {(3, 500)}  # capped at the last rung's budget


def test_an_identical_trial_is_not_run_twice_and_costs_nothing_the_second_time():
    calls = []

    def evaluate(name, rung):
        calls.append((name, rung.epochs, rung.images))
        return {"a": 0.5, "b": 0.7, "c": 0.6}[name]

    rungs = plan_rungs(3, eta=2, max_epochs=2, max_images=100, min_images=100, min_images_seen=200)
    assert len({(r.epochs, r.images) for r in rungs}) == 1  # small data: every rung the same size
    result = successive_halving(["a", "b", "c"], evaluate, rungs, macs=dict.fromkeys("abc", 10))
    assert sorted(calls) == [("a", 2, 100), ("b", 2, 100), ("c", 2, 100)]
    reused = [t for t in result.trials if t.reused]
    assert reused and all(t.seconds == 0 and t.mac_images == 0 for t in reused)
    assert result.mac_images == 3 * 3 * 10 * 100 * 2 and result.winner == "b"


def test_entry_order_takes_the_front_first_spread_over_capacity():
    assessments = [
        point("big", 9.0, 9.0, 10**9),
        point("small", 1.0, 1.0, 10**6),
        point("mid", 3.0, 3.0, 3 * 10**7),
        point("near-big", 8.0, 8.0, 9 * 10**8),
        point("dominated", 9.5, 9.5, 10**8),  # slower, larger and fewer MACs than big
    ]
    order = [a.candidate.name for a in entry_order(assessments)]
    # front: big, small, mid, near-big; most MACs first, then the farthest in log MACs each time
    assert order == ["big", "small", "mid", "near-big", "dominated"]


def test_the_winner_is_the_best_of_the_last_rung_and_the_record_round_trips(tmp_path):
    assessments = [
        point("a", 1.0, 1.0, 10**6),
        point("b", 2.0, 2.0, 10**7),
        point("c", 3.0, 3.0, 10**8),
        point("d", 4.0, 4.0, 10**9),
        point("too-slow", 50.0, 1.0, 10**6, ["predicted 50.0 ms > budget 10 ms"]),
    ]

    # c leads the first rung (1 epoch on 400 images), b overtakes with more data (2 epochs on 600):
    # later rungs decide
    def evaluate(name, rung):
        base = {"a": 0.50, "b": 0.60, "c": 0.65, "d": 0.55}[name]
        return base + (0.1 if name == "b" and rung.images >= 500 else 0.0)

    result = select_student(
        assessments, evaluate, budget=Budget(), max_epochs=4, max_images=900, target_name="pi5"
    )
    assert result.chosen == "b"
    assert set(result.entered) == {"a", "b", "c", "d"}
    assert "b had the best validation accuracy (70.0 %)" in result.reason and "4 candidates" in result.reason
    assert result.accuracies("b")[-1] == pytest.approx(0.70)
    assert result.accuracies("a")[1:] == [None]  # a left after the first rung
    # two rungs: the lone winner's third is the final training, not a trial
    assert result.accuracies("c") == [pytest.approx(0.65), pytest.approx(0.65)]
    # first-rung front over (latency, memory, accuracy): a (fastest), b, c (most accurate); not d
    assert set(result.front) == {"a", "b", "c"}
    again = SearchResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result and again.seconds == result.seconds

    write_search_csv(tmp_path / "search.csv", assessments, result)
    with open(tmp_path / "search.csv") as f:
        rows = {r["arch"]: r for r in csv.DictReader(f)}
    assert rows["b"]["chosen"] == "True" and rows["a"]["chosen"] == "False"
    assert float(rows["b"]["rung1_val_accuracy"]) == pytest.approx(0.70)
    assert "rung2_val_accuracy" not in rows["b"]
    assert rows["a"]["rung1_val_accuracy"] == "" and rows["too-slow"]["rung0_val_accuracy"] == ""
    assert rows["too-slow"]["feasible"] == "False" and "budget" in rows["too-slow"]["reasons"]
    total = sum(float(r["search_mac_images"] or 0) for r in rows.values())
    assert math.isclose(total, result.mac_images, rel_tol=1e-3)


def test_no_trials_or_one_candidate_chooses_without_training():
    assessments = [point("a", 1.0, 1.0, 10**6), point("b", 2.0, 2.0, 10**7)]

    def never(name, rung):
        raise AssertionError("no trial should run")

    none = select_student(
        assessments, never, budget=Budget(trials=0), max_epochs=1, max_images=10, target_name="t"
    )
    assert none.chosen == "b" and not none.trials and "most MACs" in none.reason
    assert none.front == ("a", "b")  # b has the MACs, a the speed: both on the front before training
    one = select_student(
        assessments[:1], never, budget=Budget(), max_epochs=1, max_images=10, target_name="t"
    )
    assert one.chosen == "a" and "only feasible" in one.reason
    with pytest.raises(NoFeasibleStudentError, match="a: too slow"):
        select_student(
            [point("a", 1, 1, 1, ["too slow"])],
            never,
            budget=Budget(),
            max_epochs=1,
            max_images=10,
            target_name="t",
        )


def test_the_space_has_at_least_twelve_families_that_all_build():
    from edgekd.catalog import build_model

    students = load_students()
    families = {c.family for c in students}
    assert len(families) >= 12 and "" not in families, families
    for c in students:
        assert build_model(c.arch, 10, **c.kwargs) is not None


def test_train_time_branches_fold_into_the_deployed_form():
    import torch

    from edgekd.analysis import analyze
    from edgekd.catalog import build_model, deploy_form

    model = build_model("repvgg_a0", 10).eval()
    deployed = deploy_form(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), deployed(x), rtol=1e-4, atol=1e-4)
    assert "batch_norm" in analyze(model, 64).op_inventory  # identity branches: unfoldable BatchNorm
    assert "batch_norm" not in analyze(deployed, 64).op_inventory
    assert analyze(deployed, 64).macs < analyze(model, 64).macs
    plain = build_model("mobilenetv3_small_050", 10)
    assert deploy_form(plain) is plain


@pytest.mark.slow
def test_fit_searches_reports_the_front_and_resumes_without_searching_again(searched_fit, tmp_path, caplog):
    import shutil

    result, searched, config, _ = searched_fit  # test_training_time reads the same fit's plan
    saved = json.loads((searched / "search.json").read_text())
    assert len(saved["entered"]) == 2 and saved["chosen"] == result.student.arch
    assert saved["chosen"] in result.student.reason and "successive halving" in result.student.reason
    with open(searched / "search.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(load_students())
    assert sum(r["rung0_val_accuracy"] != "" for r in rows) == len(saved["trials"])
    assert [r["arch"] for r in rows if r["chosen"] == "True"] == [saved["chosen"]]
    assert (searched / "search-pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "search-pareto.png" in (searched / "report.md").read_text()
    assert result.search["trials"] == len(saved["trials"])

    run = tmp_path / searched.name  # the shared run stays as the fit left it
    shutil.copytree(searched, run)
    _resumes_without_searching_or_training_again(config, run, saved, result, caplog)


@pytest.mark.slow
def test_small_data_trains_the_candidates_in_full_and_resumes_without_training_again(tmp_path, caplog):
    """On digits (small data) the default retention objective trains the candidates in full, fastest
    first (`edgekd.search.confirm`), and the chosen one's training is the final student: the
    distillation stage trains nothing more, and a resumed run neither searches nor distils again."""
    from edgekd.pipeline import FitConfig, fit
    from tests.conftest import SHARED_TEACHER_EPOCHS

    config = FitConfig.from_options(  # the session's cache: its teacher and costs, shared
        target="pi5",
        search_budget="2",
        epochs=1,
        teacher_epochs=SHARED_TEACHER_EPOCHS,
        runs_dir=tmp_path / "runs",
    )
    with caplog.at_level("INFO"):
        result = fit(config)
    run = tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir())
    saved = json.loads((run / "search.json").read_text())
    assert saved["mode"] == "confirm" and 1 <= len(saved["entered"]) <= 2
    assert saved["chosen"] == result.student.arch and saved["chosen"] in result.student.reason
    assert "full training" in result.student.reason and "the final student" in result.student.reason
    # One epoch of distillation per full training, and none after the search.
    assert caplog.text.count("distil epoch 1:") == len(saved["trials"])
    assert "distill: the search's full training is the final student" in caplog.text
    chosen = next(t for t in saved["trials"] if t["name"] == saved["chosen"])
    # the trainer scored the same (averaged) weights; an image near a tie may fall either way
    assert result.history[-1]["val_accuracy"] == pytest.approx(chosen["score"], abs=1.5 / 269)
    with open(run / "search.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(load_students())
    assert sum(r["rung0_val_accuracy"] != "" for r in rows) == len(saved["trials"])
    assert [r["arch"] for r in rows if r["chosen"] == "True"] == [saved["chosen"]]
    assert (run / "search-pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "search-pareto.png" in (run / "report.md").read_text()
    assert result.search["trials"] == len(saved["trials"]) and result.search["mode"] == "confirm"

    _resumes_without_searching_or_training_again(config, run, saved, result, caplog)


def test_a_long_list_of_npu_fallbacks_reads_as_op_counts():
    from edgekd.search.constraints import _fallback_summary

    lines = [
        f"SOFTMAX stages.{i}/attn: Operation has tensor with unsupported DataType Float32" for i in range(3)
    ]
    lines += ["DEQUANTIZE Wrapper;4: Unsupported opType"]
    summary = _fallback_summary(lines)
    assert summary.startswith("SOFTMAX x3, DEQUANTIZE x1; first: SOFTMAX stages.0/attn: Operation has tensor")
    assert _fallback_summary(lines[-1:]) == "DEQUANTIZE Wrapper;4: Unsupported opType"
    assert len(_fallback_summary(["X " + "y" * 1000, "X z"])) < 400


def test_several_targets_choose_among_candidates_that_fit_all_with_a_front_over_each_latency(tmp_path):
    """Known answer: `phone-only` wins on accuracy but breaks pi's budget; of the rest, `best` wins.
    The entry front has a latency objective per target: `pi-fast` and `phone-fast` are each fastest
    on one target and both enter before `dominated`, which is slower on both and bigger."""
    candidates = [
        joint(
            "phone-only",
            10**8,
            pi=(40.0, 2.0, 33.0, "predicted 40.0 ms > budget 33 ms"),
            phone=(9.0, 2.0, 20.0),
        ),
        joint("best", 10**7, pi=(20.0, 2.0, 33.0), phone=(15.0, 2.0, 20.0)),
        joint("pi-fast", 10**6, pi=(5.0, 1.0, 33.0), phone=(18.0, 1.0, 20.0)),
        joint("phone-fast", 10**6, pi=(30.0, 1.0, 33.0), phone=(4.0, 1.0, 20.0)),
        joint("dominated", 10**5, pi=(31.0, 3.0, 33.0), phone=(19.0, 3.0, 20.0)),
    ]
    assert [c.feasible for c in candidates] == [False, True, True, True, True]
    assert candidates[0].reasons == ("pi: predicted 40.0 ms > budget 33 ms",)
    order = [a.candidate.name for a in entry_order([c for c in candidates if c.feasible])]
    assert order[-1] == "dominated" and set(order[:3]) == {"best", "pi-fast", "phone-fast"}
    trained = []

    def evaluate(name, rung):
        trained.append(name)
        return {"phone-only": 0.99, "best": 0.8, "pi-fast": 0.6, "phone-fast": 0.7, "dominated": 0.5}[name]

    result = select_student(
        candidates, evaluate, budget=Budget(), max_epochs=2, max_images=300, target_name="pi and phone"
    )
    assert result.chosen == "best" and "phone-only" not in trained
    assert "20.00 ms of pi's 33 ms and 15.00 ms of phone's 20 ms budgets" in result.reason
    # on the first-rung front: best (most accurate) and each target's fastest; not dominated
    assert set(result.front) == {"best", "pi-fast", "phone-fast"}
    write_search_csv(tmp_path / "search.csv", candidates, result)
    with open(tmp_path / "search.csv") as f:
        rows = {r["arch"]: r for r in csv.DictReader(f)}
    assert float(rows["best"]["predicted_latency_ms@pi"]) == 20.0
    assert (
        float(rows["best"]["predicted_latency_ms@phone"]) == 15.0 and rows["best"]["budget_ms@phone"] == "20"
    )
    assert rows["phone-only"]["feasible"] == "False" and rows["phone-only"]["reasons"].startswith("pi: ")
    with pytest.raises(NoFeasibleStudentError, match="fits pi and phone's budgets"):
        select_student(
            candidates[:1], evaluate, budget=Budget(), max_epochs=1, max_images=10, target_name="pi and phone"
        )


def _resumes_without_searching_or_training_again(config, run, saved, result, caplog) -> None:
    """A run resumed after its search and distillation (result.json gone) loads both: search.json and
    the student are not written again and no epoch is trained."""
    from edgekd.pipeline import fit

    (run / "result.json").unlink()
    before = [(run / name).stat().st_mtime_ns for name in ("search.json", "student.safetensors")]
    caplog.clear()
    with caplog.at_level("INFO"):
        again = fit(config, resume=run)
    assert [(run / name).stat().st_mtime_ns for name in ("search.json", "student.safetensors")] == before
    assert "distil epoch" not in caplog.text
    assert again.student.arch == saved["chosen"] and again.search == result.search
    gap = again.teacher.params / again.student.params
    assert ("--scheme assistant would distil" in caplog.text) == (gap > 10)
