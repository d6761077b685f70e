"""Predicted latency of a model on a target: a per-op cost model fitted to measured profiles.

Each op the runtime dispatches (after folding and fusion, see `edgekd.analysis`) takes

    t = max(work / (peak x efficiency[class]), bytes / (bandwidth x memory_efficiency)) + overhead

where `work` is 2 x MACs for convolutions and matrix products (one op per element otherwise), `peak`
is the target's GFLOP/s at the precision scaled to the threads used, `bytes` are the activations read
and written plus the weights at the precision, and `class` is the op's cost class (dense, pointwise,
depthwise and grouped convolution, matmul, pooling, elementwise, data movement). The model's latency
is the sum over its ops.

One coefficient set (per-class efficiencies, memory efficiency, dispatch overhead) exists per
(target, runtime, precision, threads). It is fitted to that group's rows in `profiles/<target>.csv` by
least squares on log latency, pulled towards the target file's priors: per-class efficiencies are a
shared level plus per-class offsets, and the offsets are penalised, so a group with a handful of rows
fits little more than a level and an overhead while the host's hundred rows fit every class. Without
rows for the group the priors are used as they are, and the prediction says so.

This module is the cost model and its calibration; `edgekd.latency_validation` checks it against
the profiles (the calibration report, leave-one-out), and `edgekd.predict` is the façade that also
covers Ethos-U targets through Vela (`edgekd.vela`), which this module never imports.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from edgekd.analysis import BYTES_PER_VALUE, COST_CLASSES, ModelCost
from edgekd.op_tables import OpTable, op_table
from edgekd.profiles import ProfileRow, read_profile
from edgekd.targets import Target

log = logging.getLogger(__name__)

_CLASS_PRIOR_WEIGHT = 0.1  # penalty on log per-class offsets: a class needs evidence to leave the level
_LEVEL_PRIOR_WEIGHT = 0.05  # penalty on the level, memory efficiency and overhead against the priors


@dataclass(frozen=True)
class Coefficients:
    target: str
    runtime: str
    precision: str
    threads: int
    efficiency: dict[str, float]  # achieved share of peak, per cost class
    memory_efficiency: float  # achieved share of the bandwidth
    overhead_us: dict[str, float]  # dispatch cost per op, per cost class
    invoke_overhead_us: float  # once per inference
    rows: int  # profile rows fitted; 0: the target file's priors
    published_only: bool = False  # every row a cited publication, none measured by edgekd
    provenance: str = ""

    def vector(self) -> np.ndarray:
        """The natural log of every coefficient, in the order `op_times_s` reads them. Zero priors (an
        NPU without dispatch cost) are floored at 1 ns so they stay finite in log space."""
        return np.log(
            [
                *(self.efficiency[c] for c in COST_CLASSES),
                self.memory_efficiency,
                *(max(self.overhead_us[c], 1e-3) for c in COST_CLASSES),
                max(self.invoke_overhead_us, 1e-3),
            ]
        )

    @classmethod
    def from_vector(cls, theta: np.ndarray, **fields) -> Coefficients:
        k = len(COST_CLASSES)
        values = np.exp(theta)
        return cls(
            efficiency={c: float(values[i]) for i, c in enumerate(COST_CLASSES)},
            memory_efficiency=float(values[k]),
            overhead_us={c: float(values[k + 1 + i]) for i, c in enumerate(COST_CLASSES)},
            invoke_overhead_us=float(values[2 * k + 1]),
            **fields,
        )


def op_times_s(table: OpTable, target: Target, precision: str, threads: int, theta: np.ndarray) -> np.ndarray:
    """Seconds per op under the log coefficients `theta` (`Coefficients.vector`'s layout); the
    per-inference overhead is not in here (`model_time_s` adds it)."""
    k = len(COST_CLASSES)
    values = np.exp(theta)
    efficiency, memory_efficiency = values[:k][table.classes], values[k]
    overhead_s = values[k + 1 : 2 * k + 1][table.classes] * 1e-6
    share = threads / target.compute.cores if threads > 0 else 1.0
    peak = target.compute.peak_gflops[precision] * 1e9 * share
    activation_bytes = 1 if precision == "int8" else 4  # fp16 TFLite keeps fp32 activations
    moved = table.activation_values * activation_bytes + table.weight_values * BYTES_PER_VALUE[precision]
    compute = table.work / (peak * efficiency)
    memory = moved / (target.memory.bandwidth_gbps * 1e9 * memory_efficiency)
    return np.maximum(compute, memory) + overhead_s


def model_time_s(table: OpTable, target: Target, precision: str, threads: int, theta: np.ndarray) -> float:
    return float(op_times_s(table, target, precision, threads, theta).sum() + math.exp(theta[-1]) * 1e-6)


def prior_coefficients(target: Target, precision: str, threads: int, provenance: str = "") -> Coefficients:
    prior = target.latency_model
    return Coefficients(
        target=target.name,
        runtime=target.profile_runtime,
        precision=precision,
        threads=threads,
        efficiency={c: prior.efficiency for c in COST_CLASSES},
        memory_efficiency=prior.memory_efficiency,
        overhead_us={c: prior.per_layer_overhead_us for c in COST_CLASSES},
        invoke_overhead_us=prior.invoke_overhead_us,
        rows=0,
        provenance=provenance or f"priors from targets/{target.name}.yaml (no profile rows fitted)",
    )


def fit_coefficients(
    tables: list[OpTable], measured_ms: list[float], target: Target, precision: str, threads: int
) -> np.ndarray:
    """Least squares on log latency, regularised towards the target's priors (see module docstring).

    The fit's variables are a level and per-class log offsets for the efficiencies and for the
    dispatch overheads, plus the memory efficiency and the per-inference overhead; the offsets are
    penalised towards zero, the rest towards the priors."""
    from scipy.optimize import least_squares

    k = len(COST_CLASSES)
    prior = prior_coefficients(target, precision, threads).vector()
    log_measured = np.log(np.asarray(measured_ms) / 1e3)
    # z = [eff level, eff offsets (k), log memory eff, overhead level, overhead offsets (k), log invoke]
    levels = np.array([0, k + 1, k + 2, 2 * k + 3])
    offsets = np.r_[1 : k + 1, k + 3 : 2 * k + 3]
    prior_levels = np.array([prior[0], prior[k], prior[k + 1], prior[-1]])

    def unpack(z: np.ndarray) -> np.ndarray:
        return np.concatenate([z[0] + z[1 : k + 1], [z[k + 1]], z[k + 2] + z[k + 3 : 2 * k + 3], [z[-1]]])

    stacked = OpTable(
        classes=np.concatenate([t.classes for t in tables]),
        work=np.concatenate([t.work for t in tables]),
        activation_values=np.concatenate([t.activation_values for t in tables]),
        weight_values=np.concatenate([t.weight_values for t in tables]),
    )
    row_of_op = np.repeat(np.arange(len(tables)), [len(t.classes) for t in tables])

    def residuals(z: np.ndarray) -> np.ndarray:
        theta = unpack(z)
        times = op_times_s(stacked, target, precision, threads, theta)
        predicted = np.bincount(row_of_op, weights=times, minlength=len(tables)) + math.exp(theta[-1]) * 1e-6
        return np.concatenate(
            [
                np.log(predicted) - log_measured,
                math.sqrt(_LEVEL_PRIOR_WEIGHT) * (z[levels] - prior_levels),
                math.sqrt(_CLASS_PRIOR_WEIGHT) * z[offsets],
            ]
        )

    start = np.zeros(2 * k + 4)
    start[levels] = prior_levels
    lower, upper = np.full(2 * k + 4, -6.0), np.full(2 * k + 4, 6.0)
    lower[levels], upper[levels] = [-12.0, -12.0, math.log(1e-3), math.log(1e-3)], [3.0, 3.0, 9.2, 11.5]
    start = np.clip(start, lower + 1e-9, upper - 1e-9)
    result = least_squares(residuals, start, bounds=(lower, upper), x_scale=1.0)
    return unpack(result.x)


def coefficients_from_vector(
    theta: np.ndarray, target: Target, precision: str, threads: int, rows: list[ProfileRow]
) -> Coefficients:
    published_only = all(not r.source.startswith("measured") for r in rows)
    return Coefficients.from_vector(
        theta,
        target=target.name,
        runtime=rows[0].runtime,
        precision=precision,
        threads=threads,
        rows=len(rows),
        published_only=published_only,
        provenance=(
            f"fitted to {len(rows)} rows of profiles/{target.name}.csv ({rows[0].runtime}, {precision}, "
            f"{threads} thread{'' if threads == 1 else 's'})"
            + ("; published figures only, nothing measured here" if published_only else "")
        ),
    )


def group_rows(rows: list[ProfileRow]) -> dict[tuple[str, str, int], list[ProfileRow]]:
    groups: dict[tuple[str, str, int], list[ProfileRow]] = {}
    for row in rows:
        groups.setdefault((row.runtime, row.precision, row.threads), []).append(row)
    return groups


def calibration_rows(target: Target, precision: str, threads: int) -> list[ProfileRow]:
    rows = read_profile(target.name)
    return group_rows(rows).get((target.profile_runtime, precision, threads), [])


_calibrations: dict[tuple, Coefficients] = {}


def calibrate(target: Target, precision: str | None = None, threads: int | None = None) -> Coefficients:
    """The coefficient set for (target, its runtime, precision, threads): fitted to the profile rows
    of that group, or the target's priors when it has none. Fitted once per process."""
    precision = precision or target.default_precision
    threads = target.threads if threads is None else threads
    key = (
        target.name,
        precision,
        threads,
        repr(target.compute),
        repr(target.memory),
        repr(target.latency_model),
    )
    if key not in _calibrations:
        _calibrations[key] = _calibrate(target, precision, threads)
    return _calibrations[key]


def forget_calibration(target: Target, precision: str, threads: int) -> None:
    """Drop this process's fit of (target, precision, threads), so that the next prediction refits it
    to the profile rows as they are now."""
    for key in [k for k in _calibrations if k[:3] == (target.name, precision, threads)]:
        del _calibrations[key]


def _calibrate(target: Target, precision: str, threads: int) -> Coefficients:
    rows = calibration_rows(target, precision, threads)
    if not rows:
        groups = group_rows(read_profile(target.name))
        have = (
            ", ".join(f"{r} {p} {t} threads ({len(v)})" for (r, p, t), v in sorted(groups.items())) or "none"
        )
        return prior_coefficients(
            target,
            precision,
            threads,
            f"uncalibrated: profiles/{target.name}.csv has no {target.profile_runtime} {precision} rows at "
            f"{threads} threads (groups there: {have}); using the priors in targets/{target.name}.yaml",
        )
    log.info(
        "calibrating the %s latency predictor on %d rows of profiles/%s.csv (each model traced once, cached)",
        target.name,
        len(rows),
        target.name,
    )
    tables = [op_table(r.model, r.input_size) for r in rows]
    theta = fit_coefficients(tables, [r.latency_ms_median for r in rows], target, precision, threads)
    return coefficients_from_vector(theta, target, precision, threads, rows)


def predict_latency_ms(
    cost: ModelCost, target: Target, precision: str | None = None, threads: int | None = None
) -> float:
    coefficients = calibrate(target, precision, threads)
    table = OpTable.from_cost(cost)
    return (
        model_time_s(table, target, coefficients.precision, coefficients.threads, coefficients.vector()) * 1e3
    )
