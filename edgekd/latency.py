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

Example:
    >>> from edgekd.latency import predict_model
    >>> from edgekd.targets import get_target
    >>> predict_model("mobilenetv3_small_050", get_target("pi5"), input_size=32).latency_ms > 0
    True
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgekd.analysis import BYTES_PER_VALUE, COST_CLASSES, ModelCost
from edgekd.errors import EdgeKDError
from edgekd.profiles import ProfileRow, read_profile
from edgekd.progress import Observer, SilentObserver
from edgekd.targets import Target

log = logging.getLogger(__name__)

ANALYSIS_CACHE_VERSION = 4
_CLASS_PRIOR_WEIGHT = 0.1  # penalty on log per-class offsets: a class needs evidence to leave the level
_LEVEL_PRIOR_WEIGHT = 0.05  # penalty on the level, memory efficiency and overhead against the priors


@dataclass(frozen=True)
class OpTable:
    """The dispatched ops of one model at one input size, as arrays (what the cost model needs)."""

    classes: np.ndarray  # index into COST_CLASSES
    work: np.ndarray
    activation_values: np.ndarray  # values read + written
    weight_values: np.ndarray

    @classmethod
    def from_cost(cls, cost: ModelCost) -> OpTable:
        ops = cost.dispatched
        return cls(
            classes=np.array([COST_CLASSES.index(op.cost_class) for op in ops], dtype=np.int64),
            work=np.array([op.work for op in ops], dtype=np.float64),
            activation_values=np.array(
                [(op.input_bytes + op.output_bytes) / 4 for op in ops], dtype=np.float64
            ),
            weight_values=np.array([op.params for op in ops], dtype=np.float64),
        )


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


@dataclass(frozen=True)
class NpuEstimate:
    """Vela's estimate for an Ethos-U target, from the int8 file edgekd would ship."""

    latency_ms: float
    sram_bytes: int
    flash_bytes: int
    npu_ops: int
    cpu_ops: int
    cpu_fallbacks: tuple[str, ...]  # "OP_TYPE name: Vela's reason"
    provenance: str

    @property
    def npu_op_share(self) -> float:
        return self.npu_ops / max(self.npu_ops + self.cpu_ops, 1)


@dataclass(frozen=True)
class Prediction:
    model: str
    input_size: int
    latency_ms: float
    per_class_ms: dict[str, float]
    coefficients: Coefficients
    macs: int
    params: int
    peak_memory_bytes: int
    npu: NpuEstimate | None = None  # an Ethos-U target: Vela's figures instead of the roofline


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
            f"{threads} threads)"
            + ("; published figures only, nothing measured here" if published_only else "")
        ),
    )


def group_rows(rows: list[ProfileRow]) -> dict[tuple[str, str, int], list[ProfileRow]]:
    groups: dict[tuple[str, str, int], list[ProfileRow]] = {}
    for row in rows:
        groups.setdefault((row.runtime, row.precision, row.threads), []).append(row)
    return groups


@functools.cache
def op_table(arch: str, input_size: int) -> OpTable:
    """The op table of a timm architecture (1000 classes) at `input_size`, cached on disk by timm
    version: tracing takes ~1 s and a fit needs a hundred of them."""
    import timm

    from edgekd.teachers import default_cache_dir

    path = (
        default_cache_dir()
        / "analysis"
        / f"timm-{timm.__version__}-v{ANALYSIS_CACHE_VERSION}"
        / f"{arch}@{input_size}.json"
    )
    from edgekd._io import cached_json
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model

    return cached_json(
        path,
        lambda: OpTable.from_cost(analyze(build_model(arch, 1000), input_size)),
        lambda table: {k: v.tolist() for k, v in asdict(table).items()},
        lambda data: OpTable(**{k: np.array(v) for k, v in data.items()}),
    )


def _op_tables(rows: list[ProfileRow], observer: Observer, description: str) -> list[OpTable]:
    task = observer.task(description, total=len(rows))
    tables = []
    for row in rows:
        tables.append(op_table(row.model, row.input_size))
        task.advance(1)
    task.close()
    return tables


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
    for key in [k for k in _calibrations if k[:3] == (target.name, precision, threads)]:
        del _calibrations[key]  # the next prediction in this process uses the new fit
    fitted = calibrate(target, precision, threads)
    prior = prior_coefficients(target, precision, threads)
    tables = [op_table(r.model, r.input_size) for r in rows]

    def predict(c: Coefficients) -> tuple[float, ...]:
        return tuple(model_time_s(t, target, precision, threads, c.vector()) * 1e3 for t in tables)

    return CalibrationReport(rows, predict(prior), predict(fitted), fitted)


def predict_latency_ms(
    cost: ModelCost, target: Target, precision: str | None = None, threads: int | None = None
) -> float:
    coefficients = calibrate(target, precision, threads)
    table = OpTable.from_cost(cost)
    return (
        model_time_s(table, target, coefficients.precision, coefficients.threads, coefficients.vector()) * 1e3
    )


def predict_model(
    arch: str,
    target: Target,
    *,
    input_size: int | None = None,
    precision: str | None = None,
    threads: int | None = None,
    num_classes: int = 1000,
) -> Prediction:
    """Predict a timm architecture's latency on `target`, with the per-class breakdown."""
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model

    input_size = input_size or target.input_size
    precision = precision or target.default_precision
    if precision not in target.precisions:
        raise EdgeKDError(
            f"target {target.name} does not run {precision}; "
            f"its precisions are {', '.join(target.precisions)}."
        )
    model = build_model(arch, num_classes)
    cost = analyze(model, input_size)
    if target.latency_model.estimator == "vela":
        npu = estimate_on_npu(model, target, input_size)
        return Prediction(
            model=arch,
            input_size=input_size,
            latency_ms=npu.latency_ms,
            per_class_ms={},
            coefficients=prior_coefficients(target, precision, target.threads, npu.provenance),
            macs=cost.macs,
            params=cost.params,
            peak_memory_bytes=npu.sram_bytes + npu.flash_bytes,
            npu=npu,
        )
    coefficients = calibrate(target, precision, threads)
    table = OpTable.from_cost(cost)
    theta = coefficients.vector()
    times = op_times_s(table, target, precision, coefficients.threads, theta)
    per_class = {c: float(times[table.classes == i].sum() * 1e3) for i, c in enumerate(COST_CLASSES)}
    per_class["invoke"] = coefficients.invoke_overhead_us * 1e-3
    return Prediction(
        model=arch,
        input_size=input_size,
        latency_ms=model_time_s(table, target, precision, coefficients.threads, theta) * 1e3,
        per_class_ms={c: v for c, v in per_class.items() if v > 0},
        coefficients=coefficients,
        macs=cost.macs,
        params=cost.params,
        peak_memory_bytes=cost.peak_memory_bytes(precision),
    )


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


def estimate_on_npu(
    model, target: Target, input_size: int, *, work_dir: Path | None = None, calibration_images: int = 64
) -> NpuEstimate:
    """Export `model` to int8 TFLite the way edgekd ships it and let Vela estimate it for `target`.

    The weights are re-initialised so no branch folds away (`catalog.randomize_norm_layers`), and the
    quantizer is calibrated on random images: Vela's timing depends on shapes and on how well the
    weights compress, not on accuracy, so a model's latency can be estimated before it is trained."""
    import copy
    import tempfile

    import torch

    from edgekd.catalog import randomize_norm_layers
    from edgekd.export import Contract, export
    from edgekd.vela import compile_for_ethos_u

    if target.vela is None:
        raise EdgeKDError(f"target {target.name} has no vela: section; Vela cannot estimate it.")
    model = randomize_norm_layers(copy.deepcopy(model)).eval()
    images = torch.randn(
        calibration_images, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)
    )
    contract = Contract(
        arch=getattr(model, "default_cfg", {}).get("architecture", type(model).__name__),
        input_name="input",
        input_shape=(1, input_size, input_size, 3),
        layout="NHWC",
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        labels=(),
        precision="int8",
    )
    with tempfile.TemporaryDirectory(prefix="edgekd-vela-") as scratch:
        out = Path(work_dir) if work_dir is not None else Path(scratch)
        artifact = export(
            model, "tflite", out, contract=contract, calibration=images, min_calibration=calibration_images
        )
        report = compile_for_ethos_u(
            artifact.path,
            out / "vela",
            accelerator=target.vela.accelerator,
            system_config=target.vela.system_config,
            memory_mode=target.vela.memory_mode,
        )
    fallbacks = tuple(f"{op.op_type} {op.name}: {op.reason}" for op in report.cpu_fallbacks)
    return NpuEstimate(
        latency_ms=report.inference_ms,
        sram_bytes=report.sram_bytes,
        flash_bytes=report.flash_bytes,
        npu_ops=report.npu_ops,
        cpu_ops=report.cpu_ops,
        cpu_fallbacks=fallbacks,
        provenance=(
            f"Vela {report.vela_version} estimate for {target.vela.accelerator} "
            f"({target.vela.system_config}, {target.vela.memory_mode}) of the int8 TFLite file; "
            f"CPU-side ops are not timed"
        ),
    )
