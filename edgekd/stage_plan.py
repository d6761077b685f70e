"""Every stage of a fit with its estimated wall time, shown before anything trains, and after the fit
the same stages' actual times beside the estimates.

A stage is named as the progress display names it (its banner, and the target or platform beside it),
so the plan, the bars and the comparison read alike. The training stages are estimated from measured
rates (`edgekd.training_time`: the teacher's training, the search and the final distillation from
images per second measured here and cached); the cheap ones from what is already in the cache
(a candidate costed before, rates measured before) or, where nothing here measures them, from a
stated rule: the `RULES` table, seconds per piece of work on the loaded 2-core machine edgekd is
developed on, each rule naming its unit.

Example:
    >>> rows = [StageEstimate("search", "", 120.0, "4 candidates"), StageEstimate("report", "", 8.0, "rule")]
    >>> [r["stage"] for r in compared(rows, {"search": 150.0, "report": 5.0})]
    ['search', 'report']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Seconds per unit of work for the stages edgekd does not time ahead, from a digits fit (32 px) and a
# 1,000-image 64 px EuroSAT fit on the development machine (2 shared cores, load 2-4); each is a rule,
# not a measurement of this machine, and the plan says so beside the figure.
RULES: dict[str, tuple[float, str]] = {
    "decode": (0.0008, "s/image decoded"),
    "trace": (1.5, "s/candidate traced"),
    "calibration trace": (1.5, "s/profile model traced"),
    "vela": (20.0, "s/candidate estimated by Vela (int8 export and Vela)"),
    "probe": (4.0, "s/model's rates measured"),
    "teacher load": (5.0, "s to test and trace the teacher"),
    "export tflite": (25.0, "s/TFLite conversion"),
    "export coreml": (40.0, "s/Core ML conversion"),
    "export openvino": (20.0, "s/OpenVINO conversion"),
    "export onnx": (8.0, "s/ONNX export"),
    "parity": (2.0, "s/runtime load, parity and latency timing"),
    "bundle android": (0.2, "s for TFLite Metadata"),
    "bundle ios": (45.0, "s for the Core ML classifier"),
    "report": (8.0, "s for figures and reports"),
}


def tracing_speedup(workers: int) -> float:
    """How much faster `workers` processes trace the catalog than one: 1.56x measured with two on the
    idle 2-core development machine (33 candidates at 32 px, 12.6 s against 19.6 s, two runs each;
    each worker pays torch.export's first-call set-up, and the slowest candidates finish last); no
    more is assumed for more workers."""
    return 1.56 if workers > 1 else 1.0


def rule(name: str, units: float = 1.0) -> float:
    return RULES[name][0] * units


def stated(name: str) -> str:
    """A rule as the plan states it: `rule 30 s/TFLite conversion`."""
    return f"rule {RULES[name][0]:g} {RULES[name][1]}"


def stage_label(name: str, detail: str) -> str:
    """A stage as its banner names it, and as the plan and the timings key it: `export (pi5)`."""
    return f"{name} ({detail})" if detail else name


@dataclass(frozen=True)
class StageEstimate:
    """One row of the plan: the stage as the progress display names it, its estimated seconds (None:
    not estimated here, with `basis` saying why) and how the figure was reached."""

    stage: str
    detail: str
    seconds: float | None
    basis: str

    @property
    def label(self) -> str:
        return stage_label(self.stage, self.detail)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:  # a rule of 0.2 s reads as such, not as 0 s
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class TextTable:
    """A table a log record carries (`extra={"table": ...}`): the terminal draws it as a table whose
    first column never wraps (`edgekd._console`); the log file and any plain handler get `str()`,
    the same table as aligned text."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __str__(self) -> str:
        return f"{self.title}:\n" + _aligned(self.header, self.rows)


def plan_table(rows: Sequence[StageEstimate], done: Mapping[str, float] = {}) -> TextTable:
    """The plan: stage, estimate, how; a stage already run says so."""
    total = sum(r.seconds or 0.0 for r in rows)
    lines = [(r.label, duration(r.seconds), _with_done(r, done)) for r in rows]
    lines.append(("total", duration(total), "estimated wall time of the fit on this machine"))
    return TextTable("plan (estimated wall time per stage)", ("stage", "estimate", "how"), tuple(lines))


def _with_done(row: StageEstimate, done: Mapping[str, float]) -> str:
    took = done.get(row.label)
    return row.basis if took is None else f"{row.basis}; took {duration(took)}"


def compared(rows: Sequence[StageEstimate], actual: Mapping[str, float]) -> list[dict[str, Any]]:
    """result.json's `stages`: each planned stage's estimate beside the seconds it took (None: it did
    not run in this attempt, e.g. done in an earlier one), and actual over estimated."""
    out = []
    for r in rows:
        took = actual.get(r.label)
        ratio = took / r.seconds if took is not None and r.seconds else None
        out.append(
            {
                "stage": r.stage,
                "detail": r.detail,
                "estimated_s": None if r.seconds is None else round(r.seconds, 1),
                "actual_s": None if took is None else round(took, 1),
                "actual_over_estimated": None if ratio is None else round(ratio, 2),
                "basis": r.basis,
            }
        )
    return out


def comparison_rows(stages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(stage, estimated, actual, actual/estimated) per stage, and the total, as text."""
    rows = []
    for s in stages:
        ratio = s["actual_over_estimated"]
        rows.append(
            (
                stage_label(s["stage"], s["detail"]),
                duration(s["estimated_s"]),
                duration(s["actual_s"]),
                "" if ratio is None else f"{ratio:.2f}x",
            )
        )
    estimated = sum(s["estimated_s"] or 0.0 for s in stages)
    took = sum(s["actual_s"] or 0.0 for s in stages)
    rows.append(
        ("total", duration(estimated), duration(took), f"{took / estimated:.2f}x" if estimated else "")
    )
    return rows


def comparison_table(stages: Sequence[Mapping[str, Any]]) -> TextTable:
    """Estimated against actual seconds per stage."""
    return TextTable(
        "stage times, estimated and actual",
        ("stage", "estimated", "actual", "actual/estimated"),
        tuple(comparison_rows(stages)),
    )


def _aligned(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in table
    )


def shipping_estimates(targets, artifact_keys, bundles, student_rate: float | None, test_images: int,
                       teacher_latency: bool, device: bool, teacher_cached: bool = False,
                       teacher_ahead: bool = False) -> list[StageEstimate]:  # fmt: skip
    """The stages after training, by rule: per distinct artifact its export (two with a post-training
    comparison) and its parity check and timing; the bundles; the device; the teacher timed here; the
    report. `student_rate`: the student's measured evaluation rate (images/s), for parity's test pass;
    `teacher_cached`: the teacher is read from the cache, so an earlier fit timed it too (cached);
    `teacher_ahead`: the teacher is exported beside the student (`fit_shipping.export_teacher_ahead`),
    so its stage is the timing alone."""
    rows = []
    for target, exports in artifact_keys:
        export = rule(f"export {target.format}", exports)
        rows.append(
            StageEstimate(
                "export",
                target.name,
                export,
                stated(f"export {target.format}")
                + (f" x{exports} (+ the post-training int8 file)" if exports > 1 else ""),
            )
        )
        # PyTorch's pass over the test split at the measured rate; the runtime's is of the same order
        runs = test_images / student_rate * exports if student_rate else 0.0
        rows.append(
            StageEstimate(
                "parity",
                target.name,
                rule("parity") + runs,
                f"{stated('parity')} + {test_images} test images at the measured rate",
            )
        )
    for platform in bundles:
        rows.append(
            StageEstimate("bundle", platform, rule(f"bundle {platform}"), stated(f"bundle {platform}"))
        )
    if device:
        rows.append(StageEstimate("device", "", None, "not estimated: how fast the device is, it measures"))
    if teacher_latency and teacher_cached:
        rows.append(StageEstimate("teacher latency", "", 0.0, "rule: a cached teacher was timed before"))
    elif teacher_latency and teacher_ahead:
        rows.append(
            StageEstimate(
                "teacher latency",
                "",
                rule("parity"),
                f"{stated('parity')}: exported beside the student's export; 0 if cached",
            )
        )
    elif teacher_latency:
        first = targets[0]
        # Measured 13 s for resnet18 as TFLite beside the student's 25 s: the converter's import is paid.
        seconds = 0.5 * rule(f"export {first.format}") + rule("parity")
        rows.append(
            StageEstimate(
                "teacher latency",
                "",
                seconds,
                f"rule: half of {stated(f'export {first.format}')[5:]} + parity's; 0 if cached",
            )
        )
    rows.append(StageEstimate("report", "", rule("report"), stated("report")))
    return rows


def stage_times_section(stages: Sequence[Mapping[str, Any]] | None):
    """The report's section of estimated against actual seconds per stage, or None for a run that
    kept none (made before edgekd planned its stages)."""
    from edgekd.report_markup import Section, Table

    if not stages:
        return None
    return Section(
        "Stage times",
        (
            "Each stage's wall time as estimated before training (from the rates measured here, the "
            "cache, or a stated rule) and as it took; a stage done in an earlier attempt has no actual "
            "time, and the report's own time is in result.json, written after it.",
            Table(("stage", "estimated", "actual", "actual/estimated"), tuple(comparison_rows(stages))),
        ),
    )
