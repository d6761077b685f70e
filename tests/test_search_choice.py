"""The search's choosing machinery on synthetic inputs with known answers: the Pareto front,
successive-halving bookkeeping and budgets, and the intersection of several targets."""

import dataclasses
import itertools
import os
import random
import sys

import pytest

from edgekd.catalog import Candidate
from edgekd.errors import ConfigError
from edgekd.search import assess, latency_load, pareto_front
from edgekd.search.halving import Budget, RungPlan, parse_budget, plan_rungs, successive_halving
from edgekd.search.pareto import dominates
from edgekd.targets import get_target


def test_pareto_front_of_a_known_set():
    # (latency ms, memory MB, accuracy): minimise, minimise, maximise
    points = [
        (1.0, 1.0, 0.70),  # 0: fastest and smallest
        (2.0, 2.0, 0.80),  # 1: a trade-off
        (2.0, 2.0, 0.75),  # 2: dominated by 1
        (3.0, 1.5, 0.85),  # 3: most accurate
        (4.0, 3.0, 0.85),  # 4: dominated by 3
        (1.0, 1.0, 0.70),  # 5: equal to 0: neither dominates the other, both stay
    ]
    assert pareto_front(points, minimize=(True, True, False)) == [0, 1, 3, 5]


def test_pareto_front_matches_brute_force_on_random_sets():
    rng = random.Random(0)
    minimize = (True, True, False)
    for _ in range(50):
        points = [tuple(rng.choice([1, 2, 3]) for _ in range(3)) for _ in range(12)]
        front = set(pareto_front(points, minimize))
        # independent check: a point is off the front iff another is <= on every signed objective
        # (accuracy negated) and differs somewhere
        signed = [tuple(-v if not low else v for v, low in zip(q, minimize)) for q in points]
        for i in range(len(points)):
            beaten = any(
                all(a <= b for a, b in zip(signed[j], signed[i])) and signed[j] != signed[i]
                for j in range(len(points))
            )
            assert (i not in front) == beaten
    with pytest.raises(ValueError, match="differ in length"):
        dominates((1, 2), (1,), (True, True))


def test_plan_rungs_shrinks_by_eta_and_stops_before_the_lone_winners_full_budget():
    rungs = plan_rungs(10, eta=3, max_epochs=8, max_images=6000, min_images=64)
    # The rung of the lone winner (1 candidate, 8 epochs on 6000 images) is the final training, not a
    # trial: the deciding rung is the last, a third of the full budget, each earlier one a third of the
    # next, spent on as many distinct images as there are before epochs are added.
    assert [r.candidates for r in rungs] == [10, 4, 2]
    assert [(r.epochs, r.images) for r in rungs] == [(1, 1778), (1, 5333), (3, 5333)]
    shares = [r.epochs * r.images / (8 * 6000) for r in rungs]
    assert shares == pytest.approx([1 / 27, 1 / 9, 1 / 3], rel=1e-3)
    assert all(a.epochs <= b.epochs and a.images <= b.images for a, b in itertools.pairwise(rungs))
    assert plan_rungs(1, max_epochs=4, max_images=100) == [RungPlan(1, 4, 100)]
    # A rung that needs a second epoch keeps the images of the rung before, not a smaller subset.
    grown = plan_rungs(4, eta=3, max_epochs=4, max_images=4000, min_images=1000, min_images_seen=4000)
    assert [(r.epochs, r.images) for r in grown] == [(1, 4000), (2, 4000)]


def test_successive_halving_keeps_the_best_and_accounts_for_every_trial():
    quality = {"a": 0.5, "b": 0.9, "c": 0.7, "d": 0.6, "e": 0.8}
    macs = {name: 1000 * (i + 1) for i, name in enumerate(quality)}
    rungs = plan_rungs(5, eta=2, max_epochs=4, max_images=400, min_images=10)
    calls = []

    def evaluate(name, plan):
        calls.append((name, plan.epochs, plan.images))
        return quality[name] * plan.epochs / 4  # more budget, higher score; the order never changes

    ticks = itertools.count()
    result = successive_halving(list(quality), evaluate, rungs, macs=macs, clock=lambda: next(ticks))
    assert result.winner == "b" and not result.stopped_early
    assert [t.name for t in result.rung(0)] == list(quality)
    assert [t.name for t in result.rung(1)] == ["b", "e", "c"]
    assert [t.name for t in result.rung(2)] == ["b", "e"]
    assert result.rungs == 3  # the lone winner's rung is the final training, not a trial
    assert len(calls) == len(result.trials) == 10
    for t in result.trials:  # training work: 3 x MACs x images x epochs
        assert t.mac_images == 3 * macs[t.name] * t.images * t.epochs
        assert t.seconds == 1  # the fake clock ticks once per evaluation
    assert result.mac_images == sum(t.mac_images for t in result.trials)


def test_a_time_budget_stops_before_a_new_rung_and_a_trial_budget_caps_the_first():
    quality = {"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.4}
    rungs = plan_rungs(4, eta=2, max_epochs=4, max_images=400, min_images=10)
    ticks = itertools.count()
    result = successive_halving(
        list(quality),
        lambda name, plan: quality[name],
        rungs,
        macs=dict.fromkeys(quality, 1),
        budget=Budget(seconds=3),
        clock=lambda: next(ticks),
    )
    assert result.stopped_early and {t.rung for t in result.trials} == {0}
    assert result.winner == "d"  # the best of the last finished rung
    capped = successive_halving(
        list(quality), lambda n, p: quality[n], rungs, macs=dict.fromkeys(quality, 1), budget=Budget(trials=2)
    )
    assert [t.name for t in capped.rung(0)] == ["a", "b"] and capped.winner == "b"


def test_parse_budget():
    assert parse_budget("20m") == Budget(seconds=1200)
    assert parse_budget("1.5h") == Budget(seconds=5400)
    assert parse_budget("90s") == Budget(seconds=90)
    assert parse_budget("8") == Budget(trials=8)
    assert parse_budget("0") == Budget(trials=0) and parse_budget("all") == Budget()
    for bad in ("soon", "2.5", "-1", "-3m"):
        with pytest.raises(ConfigError, match="search budget"):
            parse_budget(bad)


def test_several_targets_intersect_and_keep_each_targets_reasons():
    pi5 = get_target("pi5")
    tight = dataclasses.replace(
        get_target("android-cpu"),
        budgets=dataclasses.replace(get_target("android-cpu").budgets, model_mb=3.0),
    )
    candidates = [Candidate("lcnet_050"), Candidate("mobilenetv2_050"), Candidate("resnet10t")]
    joint = assess(candidates, [pi5, tight], 64, 10)
    by_name = {j.candidate.arch: j for j in joint}
    for j in joint:  # feasible on both = feasible on each
        assert j.feasible == all(a.feasible for a in j.per_target.values())
        assert set(j.per_target) == {"pi5", "android-cpu"}
    resnet = by_name["resnet10t"]
    assert not resnet.feasible and resnet.per_target["pi5"].feasible
    assert any(r.startswith("android-cpu: ") and "MB of weights > budget 3 MB" in r for r in resnet.reasons)
    assert by_name["lcnet_050"].feasible
    ratio = latency_load(by_name["lcnet_050"])
    assert ratio == max(
        a.predicted_latency_ms / a.budget_ms for a in by_name["lcnet_050"].per_target.values()
    )
    with pytest.raises(ConfigError, match="named twice"):
        assess(candidates, [pi5, pi5], 64, 10)


def test_a_candidates_cost_is_traced_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import edgekd.search.constraints as constraints
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model, deploy_form

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path))
    candidate = Candidate("repvgg_a0")  # costed in its re-parameterized (deployed) form
    first = constraints.candidate_cost(candidate, 64, 10)
    direct = analyze(deploy_form(build_model("repvgg_a0", 10)), 64)
    assert first == direct
    (_,) = tmp_path.glob("analysis/*/cost/repvgg_a0-*.json")  # kept as one file in the user cache

    def no_tracing(*args, **kwargs):
        raise AssertionError("a cached cost is not traced again")

    monkeypatch.setattr(constraints, "analyze", no_tracing)
    again = constraints.candidate_cost(candidate, 64, 10)
    assert again == first and again.peak_memory_bytes("int8") == direct.peak_memory_bytes("int8")
    with pytest.raises(AssertionError, match="not traced again"):  # another size is another entry
        constraints.candidate_cost(candidate, 96, 10)


@pytest.mark.skipif(sys.platform != "linux", reason="the workers are forked on Linux only")
def test_uncached_costs_are_traced_in_worker_processes_and_equal_the_direct_trace(tmp_path, monkeypatch):
    """A first fit traces the catalog on every core: the workers' costs are the ones a direct trace
    gives, each is cached, and the parent process traces none itself."""

    import edgekd.search.constraints as constraints
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model, deploy_form

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(constraints, "tracing_workers", lambda: 2)
    traced_in = []
    real_analyze = constraints.analyze

    def recording(model, input_size):
        traced_in.append(os.getpid())  # in a worker, appends to the worker's copy of the list
        return real_analyze(model, input_size)

    monkeypatch.setattr(constraints, "analyze", recording)
    candidates = [Candidate("lcnet_035"), Candidate("repvgg_a0"), Candidate("mobilenetv3_small_050")]
    ticks = []
    costs = constraints.candidate_costs(candidates, 32, 10, on_cost=lambda: ticks.append(1))
    assert traced_in == []  # the parent traced none: a worker's appends stay in the worker
    assert len(ticks) == 3  # a progress bar advances once per candidate as its cost comes back
    for c in candidates:
        assert costs[c.name] == analyze(deploy_form(build_model(c.arch, 10)), 32), c.name
    assert len(list(tmp_path.glob("analysis/*/cost/*.json"))) == 3
    monkeypatch.setattr(constraints, "analyze", None)  # read back from the cache, traced by no one
    assert constraints.candidate_costs(candidates, 32, 10, on_cost=lambda: ticks.append(1)) == costs
    assert len(ticks) == 6


@pytest.mark.skipif(sys.platform != "linux", reason="the workers are forked on Linux only")
def test_the_fits_costing_traces_its_uncached_candidates_in_worker_processes(tmp_path, monkeypatch):
    """The plan stage costs the candidates one by one for its progress bar; it used to hand them to
    `assess` one at a time too, so a cold fit traced the catalog in one process whatever the cores."""
    from types import SimpleNamespace

    import edgekd.search.constraints as constraints
    from edgekd.fit_plan import _costing
    from edgekd.progress import SilentObserver

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(constraints, "tracing_workers", lambda: 2)
    traced_in, real_analyze = [], constraints.analyze

    def recording(model, input_size):
        traced_in.append(os.getpid())
        return real_analyze(model, input_size)

    monkeypatch.setattr(constraints, "analyze", recording)
    candidates = [Candidate("lcnet_035"), Candidate("repvgg_a0"), Candidate("mobilenetv3_small_050")]
    context = SimpleNamespace(
        data=SimpleNamespace(input_size=32, num_classes=10),
        targets=[get_target("pi5")],
        candidates=candidates,
        observer=SilentObserver(),
        stage_seconds={},
    )
    row = _costing(context)
    assert traced_in == [] and len(list(tmp_path.glob("analysis/*/cost/*.json"))) == 3
    assert [a.candidate for a in context.assessments] == candidates
    assert "(3 of 3, 2 processes)" in row.basis and context.stage_seconds["costing"] > 0


def test_the_costing_plan_counts_a_vela_run_per_uncached_candidate_on_an_ethos_target(tmp_path, monkeypatch):
    """Vela (an int8 export and its compiler, tens of seconds a candidate) was counted 0 s in the
    plan: a cold ethos-u55 fit's costing took minutes beside a plan of seconds."""
    from types import SimpleNamespace

    import edgekd.search.constraints as constraints
    from edgekd.fit_plan import _costing_row
    from edgekd.stage_plan import rule

    pytest.importorskip("ethosu.vela")
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path))
    candidates = [Candidate("lcnet_035"), Candidate("repvgg_a0"), Candidate("mobilenetv3_small_050")]
    ethos, pi5 = get_target("ethos-u55"), get_target("pi5")

    def context(*targets):
        data = SimpleNamespace(input_size=96, num_classes=10)
        return SimpleNamespace(data=data, targets=list(targets), candidates=candidates)

    alone = _costing_row(context(pi5), {})
    both = _costing_row(context(pi5, ethos), {})
    assert both.seconds - alone.seconds == pytest.approx(rule("vela", 3))
    assert "(up to 3)" in both.basis and "Vela" in both.basis and "Vela" not in alone.basis
    for c in candidates[:2]:  # two estimates already in the cache: one Vela run is left
        path = constraints._npu_cache_path(c, ethos, 96, 10)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert constraints.npu_cached(candidates[0], ethos, 96, 10)
    assert "(up to 1)" in _costing_row(context(pi5, ethos), {}).basis


@pytest.mark.slow
def test_vela_estimates_are_cached_by_candidate_and_the_targets_vela_setup(tmp_path, monkeypatch):
    import edgekd.search.constraints as constraints
    from edgekd.catalog import build_model

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path))
    ethos = get_target("ethos-u55")
    candidate = Candidate("lcnet_050")
    built = []

    def model():
        built.append(1)
        return build_model("lcnet_050", 10)

    first = constraints.candidate_on_npu(candidate, model, ethos, 32, 10)
    assert built == [1] and first.latency_ms > 0 and first.cpu_ops == 0

    def no_vela(*args, **kwargs):
        raise AssertionError("Vela ran again")

    monkeypatch.setattr(constraints, "estimate_on_npu", no_vela)
    assert constraints.candidate_on_npu(candidate, model, ethos, 32, 10) == first and built == [1]
    (assessed,) = constraints.assess([candidate], [ethos], 32, 10)  # the search reads the same entry
    on_ethos = assessed.per_target["ethos-u55"]
    assert (
        on_ethos.predicted_latency_ms == first.latency_ms
        and on_ethos.peak_memory_mb == first.sram_bytes / 2**20
    )
    dedicated = dataclasses.replace(ethos, vela=dataclasses.replace(ethos.vela, memory_mode="Dedicated_Sram"))
    with pytest.raises(AssertionError, match="Vela ran again"):  # another memory mode is another estimate
        constraints.candidate_on_npu(candidate, model, dedicated, 32, 10)


def test_the_space_is_every_candidate_at_every_size_all_targets_allow(capsys):
    from edgekd.catalog import load_students
    from edgekd.cli import main
    from edgekd.search import search_space

    pi5, ane = get_target("pi5"), get_target("apple-ane")
    space = search_space(load_students(), [pi5, ane])
    shared = sorted(set(pi5.allowed_input_sizes) & set(ane.allowed_input_sizes))
    assert shared and {size for _, size in space} == set(shared)
    assert len(space) == len(load_students()) * len(shared)
    only_64 = dataclasses.replace(pi5, input_size=64, input_sizes=(64,))
    with pytest.raises(ConfigError, match="share no input size"):
        search_space(load_students(), [only_64, ane])
    assert main(["search", "--target", "pi5", "--target", "apple-ane", "--list"]) == 0
    assert f"{len(space)} (candidate, input size) pairs" in capsys.readouterr().out


def test_pareto_plot_draws_feasible_rejected_and_untrained_candidates():
    from edgekd.plots import CandidatePoint, pareto_plot

    points = [
        CandidatePoint("fast", 1.0, 1.0, 0.70, True, True),
        CandidatePoint("chosen", 3.0, 2.0, 0.85, True, True, chosen=True),
        CandidatePoint("dominated", 4.0, 3.0, 0.80, True, False),
        CandidatePoint("too slow", 80.0, 5.0, None, False, False),
    ]
    png = pareto_plot(points, budget_ms=33.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert pareto_plot([]) is None


@pytest.mark.slow
def test_evidence_runs_real_short_distillations_and_shares_the_rungs_teacher_cache(tmp_path, digits):
    """Successive halving over three tiny students from a briefly trained teacher on digits: every
    trial is a real distillation run, scores are validation accuracies with their interval, agreement
    and KL, and each rung's teacher outputs are computed once for all its candidates."""
    import torch

    from edgekd.catalog import build_model
    from edgekd.distill.losses import make_loss
    from edgekd.distill.stage import DistillPlan
    from edgekd.distill.trainer import TrainConfig, train
    from edgekd.search.evidence import evidence
    from tests.helpers import one_torch_thread

    names = ["lcnet_050", "mobilenetv3_small_050", "mobilenetv2_050"]
    bars: list[str] = []

    class Bars:  # what the progress display is told
        def stage(self, name, detail=""):
            pass

        def task(self, description, total):
            from edgekd.progress import SilentObserver

            bars.append(description)
            return SilentObserver().task(description, total)

    with one_torch_thread():
        torch.manual_seed(0)
        teacher = build_model("resnet10t", digits.num_classes)
        train(teacher, digits, TrainConfig(epochs=1, batch_size=64, lr=3e-3), loss=make_loss("ce"))
        config = TrainConfig(epochs=1, batch_size=64, lr=3e-3, seed=0)
        rungs = plan_rungs(len(names), eta=2, max_epochs=2, max_images=300, min_images=100)
        evaluate = evidence(
            lambda arch: build_model(arch, digits.num_classes),
            teacher.eval(),
            digits,
            config,
            DistillPlan(),
            cache_dir=tmp_path,
            observer=Bars(),
            rungs=rungs,
        )
        result = successive_halving(names, evaluate, rungs, macs=dict.fromkeys(names, 1))
    # every bar of a trial names it: trial k of n, the candidate and its rung
    trials = [f"trial {k}/5 {t.name} rung {t.rung + 1}/2" for k, t in enumerate(result.trials, 1)]
    assert list(dict.fromkeys(bar.split(": ")[0] for bar in bars)) == trials
    assert f"{trials[0]}: distil epoch 1/1" in bars
    assert [len(result.rung(i)) for i in range(len(rungs))] == [3, 2]
    assert all(0.0 <= t.score <= 1.0 and t.seconds > 0 for t in result.trials)
    for t in result.trials:  # each score with its precision and the student's distance to the teacher
        assert t.val_images == len(digits.val) and t.ci_low < t.score < t.ci_high
        assert 0.0 <= t.teacher_agreement <= 1.0 and t.teacher_kl >= 0.0
    assert result.winner == max(result.rung(1), key=lambda t: t.score).name
    # the last rung sees 2 x 300 / 2 images: 1 epoch on all 300
    assert [(t.epochs, t.images) for t in result.rung(1)] == [(1, 300)] * 2
    # the cache is keyed by teacher, data subset and views: one entry per rung, however many students
    entries = {p.parent for p in (tmp_path / "teacher-outputs").rglob("*") if p.is_file()}
    assert len(entries) == len(rungs), sorted(entries)


def test_under_torchrun_the_ranks_spend_a_time_budget_on_rank_0s_clock(tmp_path):
    """Whether a budget in seconds is spent decides whether the ranks train another rung together:
    read on each rank's own clock, a slower rank 0 stops while rank 1 trains on (in DDP, alone)."""
    import json
    import time

    from edgekd.distill.distributed import main_clock
    from tests.helpers import on_two_ranks

    quality = {"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.4}
    rungs = plan_rungs(4, eta=2, max_epochs=4, max_images=400, min_images=10)

    def work(world) -> None:
        def evaluate(name, plan):
            if world.rank == 0:
                time.sleep(0.2)  # four trials: past the budget on rank 0's clock, not on rank 1's
            return quality[name]

        result = successive_halving(
            list(quality),
            evaluate,
            rungs,
            macs=dict.fromkeys(quality, 1),
            budget=Budget(seconds=0.5),
            clock=main_clock(world),
        )
        (tmp_path / f"rank{world.rank}.json").write_text(json.dumps([t.name for t in result.trials]))

    on_two_ranks(work, tmp_path)
    trained = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert trained[0] == trained[1] == list(quality)  # both stopped after the first rung
