"""How long a search trial must be to rank like a full training: the oracle's best and its runner-up at
6,000 EuroSAT images (ghostnet_100 83.65 %, mobilenetv3_large_075 82.47 % test after fit's 8-epoch
recipe, benchmarks/results/search_eurosat.json) distilled for a few epochs on seeded subsets of
different sizes, as a search trial is (`edgekd.search.evidence`), from the cached teacher.

The search's old deciding rung, 3 epochs on 1,000 images, ranked mobilenetv3_large_075 first (57.9
against 54.5 %); the rows below tell whether more epochs or more distinct images turn that round, and
`edgekd.search.halving.plan_rungs` spends a rung's budget on images first because of them.

    python benchmarks/search_rungs_probe.py            # the default trials; finished rows are kept
    python benchmarks/search_rungs_probe.py --trials 3x6000 2x6000

Writes benchmarks/results/search_rungs_probe.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_eurosat import ROOT, cache_root, cached_teacher, eurosat
from search_eurosat import fit_recipe

CONTENDERS = ("ghostnet_100", "mobilenetv3_large_075")
TRIALS = ("3x6000", "2x3000", "3x3000")  # epochs x training images
OUT = ROOT / "benchmarks" / "results" / "search_rungs_probe.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", nargs="+", default=list(TRIALS), help="EPOCHSxIMAGES")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from edgekd.catalog import build_model
    from edgekd.distill.stage import DistillPlan
    from edgekd.fit_config import FitConfig
    from edgekd.fit_recipe import default_loss
    from edgekd.search.evidence import evidence
    from edgekd.search.halving import RungPlan

    torch.set_num_threads(args.threads)
    data = eurosat(6000)
    teacher = cached_teacher(data)
    config = fit_recipe(data, teacher, 8)
    plan = dataclasses.replace(
        DistillPlan(), loss=default_loss(FitConfig.from_options(epochs=8), len(data.train))
    )

    def build(name: str):
        torch.manual_seed(config.seed)
        return build_model(name, data.num_classes)

    trial = evidence(build, teacher, data, config, plan, cache_dir=cache_root())
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    for spec in args.trials:
        epochs, images = map(int, spec.lower().split("x"))
        for name in CONTENDERS:
            if any((r["name"], r["epochs"], r["images"]) == (name, epochs, images) for r in rows):
                continue
            started = time.perf_counter()
            score = trial(name, RungPlan(1, epochs, images))
            rows.append(
                {
                    "name": name,
                    "epochs": epochs,
                    "images": images,
                    "val_accuracy": score.accuracy,
                    "teacher_agreement": score.teacher_agreement,
                    "teacher_kl": score.teacher_kl,
                    "seconds": time.perf_counter() - started,
                }
            )
            OUT.write_text(json.dumps(rows, indent=1))
    print(f"{'trial':>8s}  " + "  ".join(f"{n:>22s}" for n in CONTENDERS) + "  first")
    for epochs, images in sorted({(r["epochs"], r["images"]) for r in rows}, key=lambda k: k[0] * k[1]):
        got = {r["name"]: r["val_accuracy"] for r in rows if (r["epochs"], r["images"]) == (epochs, images)}
        cells = "  ".join(f"{100 * got[n]:21.1f}%" if n in got else f"{'-':>22s}" for n in CONTENDERS)
        print(f"{epochs}x{images:<6d}  {cells}  {max(got, key=got.get)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
