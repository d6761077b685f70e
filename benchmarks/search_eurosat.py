"""The student search on EuroSAT against an oracle: does successive halving pick (nearly) the student
that full training would, for a fraction of the compute?

The oracle distils every candidate below fully, with `edgekd fit`'s default student recipe
(`edgekd.fit_recipe.make_train_config`: SGD-Nesterov, one-cycle, 4 replayed views, flips as the
teacher decides, and fit's default loss `fit_recipe.default_loss`: Hinton KD with similarity-preserving
KD beside it at 6,000 images, KD alone on small data) for 8 epochs from the cached resnet18 teacher
(benchmarks/distill_eurosat.py's teacher recipe) on a seeded training subset (6,000 images by default,
`--train-images`), 64 px, and ranks them by test accuracy. The search ranks the same candidates by
successive halving (`edgekd.search.select_student`): short distillation runs from the same teacher on
seeded subsets, the best third going on, in the rungs fit plans for the recipe
(`edgekd.training_time.search_rungs`: half its epochs on all its images, at least 250 optimizer steps
a trial; at 6,000 images both rungs are 2 epochs on 4,000 images, so the second reuses the first's
scores, and at 1,000 images 4 epochs on all of them). `search_eurosat-small-rungs.json` holds the
6,000-image run of the rungs used before (2, then 3 epochs on 1,000 images).
Its cost is compared with the oracle's in training MAC-images (3 x MACs x images x epochs,
machine-independent) and in measured seconds.

The trials do not depend on the target, so the same evidence ranks the candidates feasible for
pi5 and for ethos-u55 (Vela on the int8 file); the two choices are printed with their constraints.
So does it for several targets at once (pi5 + ethos-u55, pi5 + android-cpu): the candidates
feasible on every one of them, as `fit --target pi5 --target ethos-u55` searches them.

    python benchmarks/search_eurosat.py                # writes benchmarks/results/search_eurosat.json
    python benchmarks/search_eurosat.py --oracle-only  # train (and cache) the oracle students only
    python benchmarks/search_eurosat.py --train-images 1000   # search_eurosat-1000img.json
    python benchmarks/search_eurosat.py --per-class 200       # search_eurosat-200perclass.json
    python benchmarks/search_eurosat.py --accelerator cuda --targets pi5   # on a GPU machine without Vela
    python benchmarks/search_eurosat.py --train-images 1000 --replay   # add fit's small-data retention

On small data (`fit_recipe.is_small_data`: under 3,200 training images) `fit` decides the retention
objective on full trainings, fastest candidate first (`edgekd.search.confirm`), not by halving. The
oracle's students are such full trainings (of the 8-epoch recipe; fit's small-data default trains
longer and ships a weight average), so that search is replayed on them: `retention_confirm` beside the
halving objectives, its cost the oracle seconds of the candidates it trained. `--replay` adds it to a
finished run's results from the cached teacher, without training.

Oracle students are cached (benchmarks/.cache/students) by loss, kd's shared with distill_eurosat.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_eurosat import (
    EPOCHS,
    INPUT_SIZE,
    ROOT,
    TRAIN_IMAGES,
    cache_root,
    cached_teacher,
    eurosat,
    kd_student,
)

# Eight pi5-feasible candidates from seven families, all under 1/10 of the teacher's MACs at 64 px.
ORACLE = (
    "mobilenetv3_small_100",
    "mobilenetv3_large_075",
    "tf_mobilenetv3_small_minimal_100",
    "mobilenetv2_050",
    "mobilenetv4_conv_small_050",
    "lcnet_100",
    "ghostnet_100",
    "efficientvit_m0",
)
TARGETS = ("pi5", "ethos-u55")
# Several targets at once (`fit --target A --target B`): one student feasible on all of them.
JOINT_TARGETS = (("pi5", "ethos-u55"), ("pi5", "android-cpu"))
OUT = ROOT / "benchmarks" / "results" / "search_eurosat.json"


def fit_recipe(data, teacher, epochs: int = EPOCHS, accelerator: str = "auto"):
    """The TrainConfig `edgekd fit` trains its student with by default, for `teacher` on `data`."""
    from edgekd.fit_config import FitConfig
    from edgekd.fit_recipe import make_train_config, view_decision

    fit = FitConfig.from_options(epochs=epochs, accelerator=accelerator)
    views = view_decision(fit, teacher, data)
    return make_train_config(fit, data.input_size, views, train_images=len(data.train))


def cpu_name() -> str:
    """The processor's model name (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help=f"default: {OUT.name}, or one named for --train-images")
    parser.add_argument("--train-images", type=int, default=TRAIN_IMAGES, help="seeded training subset")
    parser.add_argument("--oracle-only", action="store_true", help="distil (and cache) the oracle, then stop")
    parser.add_argument(
        "--replay", action="store_true", help="add fit's small-data retention search to finished results"
    )
    parser.add_argument("--per-class", type=int, help="that many training images of each class instead")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="the oracle's epochs and the last rung's")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--accelerator",
        default="auto",
        help="where the teacher, oracle and trials train (auto: a GPU if any)",
    )
    parser.add_argument(
        "--targets", nargs="+", default=list(TARGETS), help="targets to choose for (ethos-u55 needs Vela)"
    )
    args = parser.parse_args(argv)
    if args.out is None:
        suffix = "" if args.train_images == TRAIN_IMAGES else f"-{args.train_images}img"
        if args.per_class:
            suffix = f"-{args.per_class}perclass"
        if args.epochs != EPOCHS:
            suffix += f"-{args.epochs}ep"
        args.out = OUT.with_name(f"search_eurosat{suffix}.json")

    import torch

    from edgekd.catalog import build_model, load_students, student_registry
    from edgekd.distill.accelerator import resolve_accelerator
    from edgekd.distill.stage import DistillPlan
    from edgekd.distill.trainer import accuracy, predict
    from edgekd.fit_config import FitConfig
    from edgekd.fit_recipe import default_loss, is_small_data, with_batch_size
    from edgekd.search import assess
    from edgekd.search.evidence import chance_level, evidence
    from edgekd.search.halving import TRAINING_MACS_PER_FORWARD_MAC, Budget
    from edgekd.search.select import OBJECTIVES, select_student
    from edgekd.targets import get_target
    from edgekd.training_time import search_rungs

    torch.set_num_threads(args.threads)
    data = eurosat(args.train_images, per_class=args.per_class)
    teacher = cached_teacher(data, accelerator=args.accelerator)
    config = fit_recipe(data, teacher, args.epochs, args.accelerator)
    loss = default_loss(FitConfig.from_options(epochs=args.epochs), len(data.train))  # as fit decides it
    device = resolve_accelerator(args.accelerator).device
    registry = student_registry(load_students())
    candidates = [registry.get(name) for name in ORACLE]

    results: dict = {
        "recipe": {
            "epochs": args.epochs,
            "train_images": len(data.train),
            "per_class": args.per_class,
            "input_size": INPUT_SIZE,
            "loss": list(loss),
        },
        "machine": {
            "accelerator": str(device),
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
    }
    if args.replay:
        results = json.loads(args.out.read_text())
        pi5 = assess(candidates, [get_target("pi5")], INPUT_SIZE, data.num_classes)
        results["objectives"]["retention_confirm"] = confirm_replay(
            results["oracle"], pi5, teacher, data, args.epochs, results["teacher_test_accuracy"]
        )
        args.out.write_text(json.dumps(results, indent=2))
        print_table(results)
        return 0
    oracle = {}
    for name in ORACLE:
        started = time.perf_counter()
        student, info = kd_student(data, teacher, config, name, loss=loss)
        wall = time.perf_counter() - started  # counted as a trial's seconds are: setup and all
        epoch_seconds = sum(m["seconds"] for m in info["history"]) + info["cache_fill_seconds"]
        macs = assess([registry.get(name)], [get_target("pi5")], INPUT_SIZE, data.num_classes)[0].macs
        oracle[name] = {
            "test_accuracy": accuracy(*predict(student, data.test)),
            "val_accuracy": info["history"][-1]["val_accuracy"],
            "seconds": epoch_seconds,
            # its epochs and cache fill, plus building and the teacher's val logits; None when the
            # student came from the cache (faster than its own epochs)
            "wall_seconds": wall if wall >= epoch_seconds else None,
            "mac_images": TRAINING_MACS_PER_FORWARD_MAC * macs * len(data.train) * args.epochs,
            "macs": macs,
        }
        print(
            f"oracle {name}: test {100 * oracle[name]['test_accuracy']:.2f} % "
            f"({time.perf_counter() - started:.0f} s here)",
            flush=True,
        )
    results["oracle"] = oracle
    if args.oracle_only:
        for name in sorted(oracle, key=lambda n: -oracle[n]["test_accuracy"]):
            row = oracle[name]
            print(f"{name:34s} {100 * row['test_accuracy']:6.2f} % test, {row['seconds']:.0f} s")
        return 0

    def build(name: str):
        torch.manual_seed(config.seed)
        return build_model(name, data.num_classes)

    plan = dataclasses.replace(DistillPlan(), loss=loss)  # fit's plan for pi5 (no int8: no QAT epochs)
    live = evidence(build, teacher, data, config, plan, cache_dir=cache_root())
    scores: dict[tuple[str, int, int], object] = {}

    first_seconds: dict[tuple[str, int, int], float] = {}

    def evaluate(name, rung):  # the trials do not depend on the target: run each once
        key = (name, rung.epochs, rung.images)
        if key not in scores:
            started = time.perf_counter()
            scores[key] = live(name, rung)
            first_seconds[key] = time.perf_counter() - started
        return scores[key]

    def cost(search) -> dict:
        """A search's compute as if it had run alone: each distinct trial at its first run's seconds."""
        runs = {(t.name, t.epochs, t.images) for t in search.trials}
        seconds = sum(first_seconds.get(key, 0.0) for key in runs)
        return {
            "seconds": seconds,
            "seconds_share": seconds / sum(o["seconds"] for o in oracle.values()),
            # the same, against the oracle's students' whole distillation calls, measured as trials are
            "wall_seconds_share": None
            if any(o["wall_seconds"] is None for o in oracle.values())
            else seconds / sum(o["wall_seconds"] for o in oracle.values()),
            "mac_image_share": search.mac_images / sum(o["mac_images"] for o in oracle.values()),
        }

    # The rungs fit plans for this recipe (`search_rungs`: half its epochs on all its images, at least
    # SEARCH_MIN_STEPS optimizer steps a trial).
    rung_limits = search_rungs(
        with_batch_size(FitConfig.from_options(epochs=args.epochs), len(data.train)),
        args.epochs,
        len(data.train),
    )
    results["recipe"]["rungs"] = rung_limits

    def search_over(assessments, target_name: str, **objective):
        """One search over the shared trials, in the rungs fit plans."""
        return select_student(
            assessments, evaluate, budget=Budget(), target_name=target_name, **rung_limits, **objective
        )

    results["targets"] = {}
    for target_name in args.targets:
        target = get_target(target_name)
        assessments = assess(candidates, [target], INPUT_SIZE, data.num_classes)
        started = time.perf_counter()
        search = search_over(assessments, target_name)
        chosen = next(a for a in assessments if a.candidate.name == search.chosen)
        results["targets"][target_name] = {
            "search": search.to_json(),
            "wall_seconds_here": time.perf_counter() - started,  # 0 for trials already run for pi5
            "chosen": {
                "name": chosen.candidate.name,
                "predicted_latency_ms": chosen.per_target[target_name].predicted_latency_ms,
                "budget_ms": chosen.per_target[target_name].budget_ms,
                "peak_memory_mb": chosen.peak_memory_mb,
                "model_mb": chosen.model_mb,
                "reasons": list(chosen.reasons),
            },
            "assessments": {
                a.candidate.name: {
                    "feasible": a.feasible,
                    "reasons": list(a.reasons),
                    "predicted_latency_ms": a.per_target[target_name].predicted_latency_ms,
                    "peak_memory_mb": a.peak_memory_mb,
                }
                for a in assessments
            },
        }
        print(f"{target_name}: {search.reason}", flush=True)

    # Issue 16: the same trials ranked by each objective on pi5, against the oracle.
    teacher_test = accuracy(*predict(teacher, data.test))
    pi5 = assess(candidates, [get_target("pi5")], INPUT_SIZE, data.num_classes)
    results["teacher_test_accuracy"] = teacher_test
    results["objectives"] = {}
    for objective in OBJECTIVES:
        started = time.perf_counter()
        search = search_over(
            pi5,
            "pi5",
            objective=objective,
            chance=chance_level(data.val),
            available_images=len(data.train),
        )
        results["objectives"][objective] = {
            "search": search.to_json(),
            "wall_seconds_here": time.perf_counter() - started,
            **judged(search.chosen, objective, oracle, pi5, teacher_test),
            **cost(search),
        }
        print(f"objective {objective}: {search.reason}", flush=True)
    if is_small_data(len(data.train)):
        results["objectives"]["retention_confirm"] = confirm_replay(
            oracle, pi5, teacher, data, args.epochs, teacher_test
        )
    results["rank_quality"] = rank_quality(results["objectives"]["accuracy"]["search"], oracle)

    results["joint"] = {}
    for names in (n for n in JOINT_TARGETS if set(n) <= set(args.targets)):
        joint = assess(candidates, [get_target(n) for n in names], INPUT_SIZE, data.num_classes)
        search = search_over(joint, " and ".join(names))
        chosen = next(j for j in joint if j.candidate.name == search.chosen)
        results["joint"]["+".join(names)] = {
            "search": search.to_json(),
            "feasible": [j.candidate.name for j in joint if j.feasible],
            "chosen": {
                "name": chosen.candidate.name,
                "oracle_test_accuracy": oracle[chosen.candidate.name]["test_accuracy"],
                "per_target": {
                    n: {
                        "predicted_latency_ms": a.predicted_latency_ms,
                        "budget_ms": a.budget_ms,
                        "peak_memory_mb": a.peak_memory_mb,
                        "model_mb": a.model_mb,
                        "feasible": a.feasible,
                    }
                    for n, a in chosen.per_target.items()
                },
            },
            "rejected": {j.candidate.name: list(j.reasons) for j in joint if not j.feasible},
        }
        print(f"{' + '.join(names)}: {search.reason}", flush=True)

    pi5 = results["targets"]["pi5"]["search"]
    best = max(oracle, key=lambda n: oracle[n]["test_accuracy"])
    results["summary"] = {
        "oracle_best": best,
        "oracle_best_test_accuracy": oracle[best]["test_accuracy"],
        "search_choice": pi5["chosen"],
        "search_choice_test_accuracy": oracle[pi5["chosen"]]["test_accuracy"],
        "gap_points": 100 * (oracle[best]["test_accuracy"] - oracle[pi5["chosen"]]["test_accuracy"]),
        "mac_image_share": pi5["mac_images"] / sum(o["mac_images"] for o in oracle.values()),
        "seconds_share": pi5["seconds"] / sum(o["seconds"] for o in oracle.values()),
        "choices_differ": len({t["chosen"]["name"] for t in results["targets"].values()}) > 1,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results)
    return 0


def confirm_replay(oracle: dict, assessments, teacher, data, epochs: int, teacher_test: float) -> dict:
    """fit's retention search on small data (`edgekd.search.confirm.confirm_student`: full trainings,
    fastest first, the first whose validation accuracy keeps 97 % of the teacher's, at most 3, else the
    most accurate of them) replayed on the oracle: a candidate's full training is its oracle student,
    scored on the same validation images, and costs that student's seconds."""
    from edgekd.search.confirm import confirm_student, teacher_validation
    from edgekd.search.evidence import chance_level
    from edgekd.search.halving import Budget, ValidationScore

    teacher_val, _ = teacher_validation(teacher, data)
    spent = [0.0]

    def train(name: str):
        spent[0] += oracle[name]["seconds"]
        return ValidationScore(oracle[name]["val_accuracy"], len(data.val)), None

    search = confirm_student(
        assessments,
        train,
        teacher_val=teacher_val,
        epochs=epochs,
        images=len(data.train),
        budget=Budget(),
        target_name="pi5",
        chance=chance_level(data.val),
        clock=lambda: spent[0],
    ).result
    trained = {t.name for t in search.trials}
    chosen = search.chosen
    print(f"retention as fit decides it on small data (replayed on the oracle): {search.reason}", flush=True)
    return {
        "search": search.to_json(),
        "teacher_val_accuracy": teacher_val.accuracy,
        **judged(chosen, "retention", oracle, assessments, teacher_test),
        "seconds": spent[0],
        "seconds_share": spent[0] / sum(o["seconds"] for o in oracle.values()),
        "wall_seconds_share": None,  # the replay trains nothing: its seconds are the oracle's
        "mac_image_share": sum(oracle[n]["mac_images"] for n in trained)
        / sum(o["mac_images"] for o in oracle.values()),
    }


def wall_share(objective: dict) -> str:
    share = objective.get("wall_seconds_share")
    return "n/a" if share is None else f"{100 * share:.1f} %"


def judged(chosen: str, objective: str, oracle: dict, assessments, teacher_test: float) -> dict:
    """The choice held against the oracle: its full-training test accuracy and retention of the
    teacher's; for retention, the fastest oracle candidate that keeps 97 % and the latency ratio to
    it; for accuracy, the gap to the oracle's best."""
    latency = {a.candidate.name: a.per_target["pi5"].predicted_latency_ms for a in assessments}
    mine = oracle[chosen]["test_accuracy"]
    out = {"chosen": chosen, "oracle_test_accuracy": mine, "retention": mine / teacher_test}
    keeping = [n for n in oracle if oracle[n]["test_accuracy"] >= 0.97 * teacher_test]
    if keeping:
        fastest = min(keeping, key=latency.get)
        out.update(fastest_keeping_97=fastest, latency_ratio_to_it=latency[chosen] / latency[fastest])
    best = max(oracle, key=lambda n: oracle[n]["test_accuracy"])
    out.update(oracle_best=best, gap_to_best_points=100 * (oracle[best]["test_accuracy"] - mine))
    return out


def rank_quality(search: dict, oracle: dict) -> dict:
    """Spearman's rank correlation between each evidence of the first rung (the only one every
    candidate ran) and the oracle's test accuracy over the candidates, and for the deepest rung each
    candidate reached (scores of different budgets: a looser reading)."""
    from scipy.stats import spearmanr

    def correlation(rung_of: dict, key: str, sign: float = 1.0) -> float | None:
        names = [n for n in oracle if n in rung_of and rung_of[n].get(key) is not None]
        if len(names) < 3:
            return None
        value = spearmanr(
            [sign * rung_of[n][key] for n in names], [oracle[n]["test_accuracy"] for n in names]
        )
        return float(value.statistic)

    first = {t["name"]: t for t in search["trials"] if t["rung"] == 0 and not t.get("retry")}
    if any(t.get("retry") for t in search["trials"]):  # the chance check's longer re-run replaces rung 0
        first = {t["name"]: t for t in search["trials"] if t["rung"] == 0 and t.get("retry")}
    deepest: dict = {}
    for t in search["trials"]:
        if t["name"] not in deepest or t["rung"] >= deepest[t["name"]]["rung"]:
            deepest[t["name"]] = t
    return {
        rung: {
            "accuracy": correlation(trials, "score"),
            "teacher_agreement": correlation(trials, "teacher_agreement"),
            "teacher_kl": correlation(trials, "teacher_kl", -1.0),  # lower KL ranks higher
            "candidates": len(trials),
        }
        for rung, trials in (("first_rung", first), ("deepest_rung", deepest))
    }


def print_table(results: dict) -> None:
    oracle, pi5 = results["oracle"], results["targets"]["pi5"]["search"]
    print(f"\n{'candidate':34s} {'oracle test %':>13s} {'oracle val %':>12s}  search val % by rung")
    for name in sorted(oracle, key=lambda n: -oracle[n]["test_accuracy"]):
        rungs = [t for t in pi5["trials"] if t["name"] == name]
        cells = " ".join(f"{100 * t['score']:.1f}@{t['epochs']}ep/{t['images']}" for t in rungs)
        print(
            f"{name:34s} {100 * oracle[name]['test_accuracy']:13.2f} "
            f"{100 * oracle[name]['val_accuracy']:12.2f}  {cells}"
        )
    s = results["summary"]
    print(
        f"\noracle best {s['oracle_best']} {100 * s['oracle_best_test_accuracy']:.2f} %; search chose "
        f"{s['search_choice']} {100 * s['search_choice_test_accuracy']:.2f} % (gap {s['gap_points']:.2f} "
        f"points) for {100 * s['mac_image_share']:.1f} % of the oracle's MAC-images and "
        f"{100 * s['seconds_share']:.1f} % of its seconds"
    )
    for name, t in results["targets"].items():
        c = t["chosen"]
        print(
            f"{name}: {c['name']}, predicted {c['predicted_latency_ms']:.2f} ms of {c['budget_ms']:g} ms, "
            f"peak {c['peak_memory_mb']:.2f} MB, weights {c['model_mb']:.2f} MB"
        )
    teacher_test = results.get("teacher_test_accuracy")
    for objective, o in results.get("objectives", {}).items():
        extra = (
            f", fastest keeping 97 %: {o['fastest_keeping_97']} "
            f"(latency ratio {o['latency_ratio_to_it']:.2f})"
            if "fastest_keeping_97" in o
            else ", no oracle candidate keeps 97 %"
        )
        print(
            f"objective {objective}: {o['chosen']} {100 * o['oracle_test_accuracy']:.2f} % "
            f"(retention {100 * o['retention']:.1f} % of {100 * teacher_test:.2f} %; "
            f"{o['gap_to_best_points']:.2f} points under {o['oracle_best']}){extra}; "
            f"search {o['seconds']:.0f} s = {100 * o['seconds_share']:.1f} % of the oracle's epoch seconds "
            f"({wall_share(o)} of its distillation calls' seconds), "
            f"{100 * o['mac_image_share']:.1f} % of its MAC-images"
        )
    for rung, r in results.get("rank_quality", {}).items():
        cells = ", ".join(f"{k} {v:+.2f}" for k, v in r.items() if k != "candidates" and v is not None)
        print(f"Spearman vs oracle ({rung}, {r['candidates']} candidates): {cells}")
    for names, j in results.get("joint", {}).items():
        c = j["chosen"]
        fits = "; ".join(
            f"{n} {t['predicted_latency_ms']:.2f}/{t['budget_ms']:g} ms, {t['peak_memory_mb']:.2f} MB"
            for n, t in c["per_target"].items()
        )
        print(
            f"{names}: {len(j['feasible'])} of {len(results['oracle'])} fit all; chose {c['name']} "
            f"(oracle {100 * c['oracle_test_accuracy']:.2f} %): {fits}"
        )


if __name__ == "__main__":
    sys.exit(main())
