"""How good the latency predictor (`edgekd.latency`) is on a target's profile rows: the calibration
report (priors against the fit on the same rows, after `edgekd profile --record` adds some) and
leave-one-out validation per (runtime, precision, threads) group. Apart from the cost model because
only `edgekd calibrate` / `edgekd validate-latency` and the benchmarks ask for it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgekd.errors import EdgeKDError
from edgekd.latency import (
    Coefficients,
    calibrate,
    calibration_rows,
    fit_coefficients,
    forget_calibration,
    group_rows,
    model_time_s,
    prior_coefficients,
)
from edgekd.op_tables import OpTable, op_table
from edgekd.profiles import ProfileRow, read_profile
from edgekd.progress import Observer, SilentObserver
from edgekd.targets import Target


@dataclass(frozen=True)
class CalibrationReport:
    """The predictor on one group of profile rows before calibration (the target file's priors) and
    after (fitted to those rows)."""

    rows: tuple[ProfileRow, ...]
    before_ms: tuple[float, ...]
    after_ms: tuple[float, ...]
    coefficients: Coefficients

    @staticmethod
    def _mape(predicted: tuple[float, ...], rows: tuple[ProfileRow, ...]) -> float:
        return 100 * float(
            np.mean([abs(p / r.latency_ms_median - 1) for p, r in zip(predicted, rows, strict=True)])
        )

    @property
    def before_mape(self) -> float:
        return self._mape(self.before_ms, self.rows)

    @property
    def after_mape(self) -> float:
        return self._mape(self.after_ms, self.rows)


def calibration_report(
    target: Target, precision: str | None = None, threads: int | None = None
) -> CalibrationReport:
    """Refit the predictor of (target, precision, threads) to its profile rows as they are now (new
    `edgekd profile --record` rows included) and compare with the priors on the same rows."""
    precision = precision or target.default_precision
    threads = target.threads if threads is None else threads
    rows = tuple(calibration_rows(target, precision, threads))
    if not rows:
        groups = group_rows(read_profile(target.name))
        have = (
            ", ".join(f"{r} {p} {t} threads ({len(v)})" for (r, p, t), v in sorted(groups.items())) or "none"
        )
        raise EdgeKDError(
            f"profiles/{target.name}.csv has no {target.profile_runtime} {precision} rows at {threads} "
            f"threads to calibrate on (groups there: {have}); record some with "
            f"`edgekd profile ARTIFACT --device D --record --target {target.name}`."
        )
    forget_calibration(target, precision, threads)  # the next prediction in this process uses the new fit
    fitted = calibrate(target, precision, threads)
    prior = prior_coefficients(target, precision, threads)
    tables = [op_table(r.model, r.input_size) for r in rows]

    def predict(c: Coefficients) -> tuple[float, ...]:
        return tuple(model_time_s(t, target, precision, threads, c.vector()) * 1e3 for t in tables)

    return CalibrationReport(rows, predict(prior), predict(fitted), fitted)


def _op_tables(rows: list[ProfileRow], observer: Observer, description: str) -> list[OpTable]:
    task = observer.task(description, total=len(rows))
    tables = []
    for row in rows:
        tables.append(op_table(row.model, row.input_size))
        task.advance(1)
    task.close()
    return tables


@dataclass(frozen=True)
class GroupValidation:
    """Leave-one-out over one (runtime, precision, threads) group of a target's profile."""

    target: str
    runtime: str
    precision: str
    threads: int
    rows: int
    mape: float
    within_10: float
    within_20: float
    spearman: float | None
    published_only: bool
    prior_mape: float  # the target file's priors alone, nothing fitted: how far off an uncalibrated group is
    predictions: list[dict] = field(default_factory=list)


def leave_one_out(
    target: Target, min_rows: int = 3, observer: Observer | None = None
) -> list[GroupValidation]:
    """For every group with at least `min_rows` rows: fit on all rows but one, predict that one."""
    from scipy.stats import spearmanr

    observer = observer or SilentObserver()
    results = []
    for (runtime, precision, threads), rows in sorted(group_rows(read_profile(target.name)).items()):
        if len(rows) < min_rows or precision not in target.compute.peak_gflops:
            continue
        tables = _op_tables(rows, observer, f"tracing {runtime} {precision} {threads}-thread models")
        measured = np.array([r.latency_ms_median for r in rows])
        predicted = np.empty(len(rows))
        task = observer.task(f"leave-one-out {runtime} {precision} {threads} threads", total=len(rows))
        for i in range(len(rows)):
            keep = [j for j in range(len(rows)) if j != i]
            theta = fit_coefficients(
                [tables[j] for j in keep], list(measured[keep]), target, precision, threads
            )
            predicted[i] = model_time_s(tables[i], target, precision, threads, theta) * 1e3
            task.advance(1)
        task.close()
        errors = (predicted - measured) / measured
        priors = prior_coefficients(target, precision, threads).vector()
        from_priors = np.array([model_time_s(t, target, precision, threads, priors) * 1e3 for t in tables])
        rho = spearmanr(predicted, measured).statistic if len(rows) >= 3 else None
        results.append(
            GroupValidation(
                target=target.name,
                runtime=runtime,
                precision=precision,
                threads=threads,
                rows=len(rows),
                mape=float(np.mean(np.abs(errors)) * 100),
                within_10=float(np.mean(np.abs(errors) <= 0.10) * 100),
                within_20=float(np.mean(np.abs(errors) <= 0.20) * 100),
                spearman=None if rho is None or math.isnan(rho) else float(rho),
                published_only=all(not r.source.startswith("measured") for r in rows),
                prior_mape=float(np.mean(np.abs(from_priors / measured - 1)) * 100),
                predictions=[
                    {
                        "model": r.model,
                        "input_size": r.input_size,
                        "measured_ms": float(m),
                        "predicted_ms": round(float(p), 4),
                        "error_pct": round(float(e) * 100, 2),
                    }
                    for r, m, p, e in zip(rows, measured, predicted, errors, strict=True)
                ],
            )
        )
    return results


def write_validation(results: list[GroupValidation], path: Path) -> Path:
    from edgekd._io import write_json_atomic

    return write_json_atomic(path, {"groups": [asdict(r) for r in results]})
