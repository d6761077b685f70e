"""Leave-one-out error of edgekd's latency predictor on every target's profile (profiles/*.csv).

For each (target, runtime, precision, threads) group with at least 3 rows: fit on all rows but one,
predict that one; report MAPE, the share within ±10 % and ±20 %, and Spearman's rank correlation.
Groups of published rows are reported as what they are: a handful of figures from one source.

    python benchmarks/latency_predictor.py [--targets host pi5 ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="*", default=None)
    args = parser.parse_args(argv)

    from edgekd._io import write_json_atomic
    from edgekd.latency_validation import leave_one_out
    from edgekd.profiles import profile_dirs
    from edgekd.targets import get_target

    names = args.targets or sorted(p.stem for p in profile_dirs()[0].glob("*.csv"))
    header = (
        f"{'target':12s} {'runtime':14s} {'prec':5s} {'thr':>3s} {'rows':>4s} {'MAPE%':>6s} {'±10%':>5s} "
        f"{'±20%':>5s} {'rho':>6s} {'prior MAPE%':>11s}  rows from"
    )
    print(header)
    print("-" * len(header))
    groups = []
    started = time.perf_counter()
    for name in names:
        for g in leave_one_out(get_target(name)):
            rho = "n/a" if g.spearman is None else f"{g.spearman:.3f}"
            print(
                f"{g.target:12s} {g.runtime:14s} {g.precision:5s} {g.threads:3d} {g.rows:4d} {g.mape:6.1f} "
                f"{g.within_10:5.0f} {g.within_20:5.0f} {rho:>6s} {g.prior_mape:11.1f}  "
                f"{'publications' if g.published_only else 'measured here'}"
            )
            groups.append(asdict(g))
    write_json_atomic(
        ROOT / "benchmarks" / "results" / "latency_predictor.json",
        {"groups": groups, "seconds": round(time.perf_counter() - started, 1)},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
