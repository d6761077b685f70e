"""The run's reports, `report.md` and a self-contained `report.html`, and its `metrics.csv`, from a
fit's `FitResult` (what `result.json` holds).

Both reports render one document model (`edgekd.report_markup`: sections of paragraphs, tables and
figures), so they carry the same information and differ only in markup. A new figure is one drawing
function in `edgekd.plots` and one line in `make_plots`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd._io import atomic_path, write_bytes_atomic, write_text_atomic
from edgekd.plots import CandidatePoint, pareto_plot, training_curves
from edgekd.report_markup import Code, Plot, Section, Table, html_page, markdown
from edgekd.training_time import report_line

if TYPE_CHECKING:
    from edgekd.fit_result import ExportRecord, FitResult, TargetResult
    from edgekd.rundir import RunDir


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Write the per-epoch metrics as CSV, one row per epoch; nothing when there are no epochs."""
    if not history:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def make_plots(result: FitResult) -> list[Plot]:
    """Draw the report's figures; one that has no data to show is left out.

    Args:
        result: the fit's result.

    Returns:
        The figures in the order the reports show them.
    """
    plots = []
    curves = training_curves(list(result.history), (result.baseline or {}).get("history"))
    if curves is not None:
        plots.append(Plot("Training curves", "training-curves.png", curves))
    search = result.search or {}
    if search.get("trials"):
        records = result.targets
        for record in records:
            name = record.target.name
            points = [
                CandidatePoint(
                    c["name"],
                    c["predicted_latency_ms"][name],
                    c["peak_memory_mb"],
                    c["first_rung_accuracy"],
                    c["feasible"],
                    c["on_front"],
                    c["chosen"],
                )
                for c in search["candidates"]
            ]
            png = pareto_plot(points, budget_ms=record.target.budget_ms)
            if png is None:
                continue
            if len(records) == 1:
                title, filename = "Student search: Pareto front (first-rung accuracy)", "search-pareto.png"
            else:
                title = f"Student search, latency on {name}: front of all targets (first-rung accuracy)"
                filename = f"search-pareto-{name}.png"
            plots.append(Plot(title, filename, png))
    return plots


def write_reports(run: RunDir, result: FitResult) -> list[Path]:
    """Write the figures as PNG files, `report.md` and `report.html` into a run directory.

    Every file is written atomically. The figures go first, so a report never links to an image that is
    not there yet.

    Args:
        run: the run directory, which names the reports.
        result: the fit's result.

    Returns:
        The paths written: the figures, then `report.md`, then `report.html`.
    """
    plots = make_plots(result)
    written = [write_bytes_atomic(run.path / plot.filename, plot.png) for plot in plots]
    written.append(write_text_atomic(run.report_md, render_markdown(result, plots)))
    written.append(write_text_atomic(run.report_html, render_html(result, plots)))
    return written


def render_markdown(result: FitResult, plots: Sequence[Plot] = ()) -> str:
    """The report as Markdown; figures are links to their PNG files beside `report.md`.

    Args:
        result: the fit's result.
        plots: the figures, as `make_plots` draws them.
    """
    return markdown(_document(result, plots))


def render_html(result: FitResult, plots: Sequence[Plot] = ()) -> str:
    """The report as one self-contained HTML file: inline CSS, figures as data URIs, no scripts.

    Every piece of text from `result` is HTML-escaped.

    Args:
        result: the fit's result.
        plots: the figures, as `make_plots` draws them.
    """
    return html_page(_document(result, plots))


def _document(result: FitResult, plots: Sequence[Plot]) -> list[Section]:
    """What the reports say, independent of markup."""
    t, s, data = result.teacher, result.student, result.data
    records = result.targets
    several = len(records) > 1
    names = ", ".join(r.target.name for r in records)
    described = " ".join(f"{r.target.description}." for r in records)
    sections = [
        Section(
            f"edgekd fit: {s.arch} for {names}",
            (
                f"{described} Data: {data.name} "
                f"({data.train}/{data.val}/{data.test} train/val/test images, "
                f"{data.num_classes} classes, {data.input_size} px).",
                Table(
                    ("", "teacher", "student"),
                    (
                        ("model", t.arch, s.arch),
                        ("params", f"{t.params:,}", f"{s.params:,}"),
                        ("MACs", _num(t.macs, ","), f"{s.macs:,}"),
                        ("test accuracy", _pct(t.test_accuracy), _pct(s.test_accuracy)),
                    ),
                ),
                f"Teacher: {t.source}.",
                f"Student choice: {s.reason}",
                *([kept] if (kept := retention_sentence(result)) else []),
                *([f"Distillation: {s.distillation}."] if s.distillation else []),
                *([f"Training views: {result.augmentation['why']}."] if result.augmentation else []),
                *_baseline_lines(result.baseline, s.test_accuracy),
                *report_line(result.plan),
            ),
        ),
        Section(
            "Export",
            (
                Table(
                    (
                        *(("for",) if several else ()),
                        "artifact",
                        "format",
                        "size",
                        "top-1 agreement",
                        "max abs logit diff",
                        "artifact accuracy",
                    ),
                    tuple(
                        (*((_shipped_to(r, records),) if several else ()), *row)
                        for r in records
                        if not r.shared_with
                        for row in _export_rows(r.export)
                    ),
                ),
            ),
        ),
        Section(
            "Latency",
            (
                Table(
                    ("where", "how", "ms", "p90 ms"),
                    tuple(
                        row
                        for r in records
                        for row in (
                            (
                                r.target.name,
                                f"predicted ({r.target.default_precision}): {r.predicted_by}",
                                f"{r.predicted_latency_ms:.2f}",
                                "",
                            ),
                            *(() if r.shared_with else _host_latency_rows(r.host_latency)),
                        )
                    ),
                ),
                *_cold_start_lines(records),
                *_device_lines(result.device_latency),
                *_device_layers(result.device_latency),
            ),
        ),
        Section("Distillation", (_epoch_table(result.history),)),
    ]
    if plots:
        sections.append(Section("Figures", tuple(plots)))
    return sections


def retention_sentence(result: FitResult) -> str | None:
    """How much of the teacher's test accuracy the student keeps, held against `--min-retention` when
    the search chose for retention. The search judges retention on short trials; this is the check on
    the finished student, so a shortfall is said, not hidden behind the trial evidence."""
    student, teacher = result.student.test_accuracy, result.teacher.test_accuracy
    if not teacher:
        return None
    kept = student / teacher
    sentence = (
        f"The student keeps {100 * kept:.1f} % of the teacher's test accuracy "
        f"({_pct(student)} against {_pct(teacher)})"
    )
    search = result.search or {}
    wanted = search.get("min_retention") if search.get("objective") == "retention" else None
    if wanted is None:
        return f"{sentence}."
    if kept >= wanted:
        return f"{sentence}, meeting the {100 * wanted:g} % asked for (--min-retention)."
    return (
        f"{sentence}, short of the {100 * wanted:g} % asked for (--min-retention): the trials judged it "
        "against the best trial, not the teacher. More --epochs, or --objective accuracy for a larger "
        "student, would narrow the gap."
    )


def _baseline_lines(baseline: dict[str, Any] | None, student_accuracy: float) -> tuple[str, ...]:
    if not baseline:
        return ()
    gain = 100 * (student_accuracy - baseline["test_accuracy"])
    verdict = (
        f"distillation added {gain:.2f} points" if gain >= 0 else f"distillation cost {-gain:.2f} points"
    )
    return (
        f"Without the teacher (--baseline scratch: {baseline['description']}) the student reaches "
        f"{_pct(baseline['test_accuracy'])} test accuracy in {baseline['seconds']:.0f} s of training: "
        f"{verdict}.",
    )


def _shipped_to(record: TargetResult, records: Sequence[TargetResult]) -> str:
    """The targets an artifact ships to: its own and those that share it."""
    name = record.target.name
    return ", ".join([name, *(r.target.name for r in records if r.shared_with == name)])


def _export_rows(e: ExportRecord) -> tuple[tuple[str, ...], ...]:
    """One artifact's row, its parity on the test split, and its post-training comparison if any."""
    parity = e.parity
    return (
        (
            Code(e.file),
            f"{e.format}, {e.precision}"
            + (" quantization-aware" if e.quantization_aware else "")
            + f", {e.layout}",
            f"{e.size_bytes / 1e6:.2f} MB",
            *(
                (
                    _pct(parity["top1_agreement"]),
                    f"{parity['max_abs_diff']:.2e}",
                    _pct(parity["artifact_accuracy"]),
                )
                if parity
                else (e.parity_note or "not run", "", "")
            ),
        ),
        *_post_training_row(e),
    )


def _cold_start_lines(records: Sequence[TargetResult]) -> tuple[str, ...]:
    """Load + first inference on this host, per artifact (or why it was not measured)."""
    own = [r for r in records if not r.shared_with]
    lines = []
    for r in own:
        lat = r.host_latency
        of = f" of {r.export.file}" if len(own) > 1 else ""
        lines.append(
            f"Cold start on this host (load + first inference){of}: {lat['cold_start_ms']:.1f} ms."
            if lat
            else f"Not measured on this host{of}: its runtime cannot run here."
        )
    return tuple(lines)


def _device_lines(device: dict[str, Any] | None) -> tuple[str, ...]:
    """The measured-against-predicted sentence for a fit run with --device."""
    if not device:
        return ()
    m = device["measurement"]
    fp = m["fingerprint"]
    where = ", ".join(str(fp[k]) for k in ("cpu", "model", "os") if fp.get(k))
    return (
        f"Measured on {device['device']} ({device['uri']}; {where}): {device['measured_ms']:.3f} ms "
        f"{device['statistic']} over {m['latency']['runs']} runs against {device['predicted_ms']:.3f} ms "
        f"predicted for {device['predicted_for']} (measured / predicted = "
        f"{device['measured_over_predicted']:.2f}).",
    )


def _device_layers(device: dict[str, Any] | None, top: int = 10) -> tuple[Table, ...]:
    """The slowest layers on the device, where its runtime reports per-layer times (OpenVINO's
    performance counters, benchmark_model's op profiling)."""
    layers = (device or {}).get("measurement", {}).get("layers") or []
    if not layers:
        return ()
    total = sum(row["ms"] for row in layers) or 1.0
    rows = tuple(
        (Code(row["layer"]), row["type"], f"{row['ms']:.3f}", f"{100 * row['ms'] / total:.1f} %")
        for row in layers[:top]
    )
    return (Table(("slowest layers on the device", "type", "ms", "share"), rows),)


def _host_latency_rows(lat: dict[str, Any] | None) -> tuple[tuple[str, ...], ...]:
    from edgekd.devices import central_figure, runtime_description

    if not lat:
        return ()
    statistic, figure = central_figure(lat)
    return (
        (
            f"this host: {lat['device']}",
            f"measured {statistic}, {runtime_description(lat)}, {lat['runs']} runs",
            f"{figure:.3f}",
            f"{lat['p90_ms']:.3f}",
        ),
    )


def _post_training_row(export: ExportRecord) -> tuple[tuple[str, ...], ...]:
    """Beside a quantization-aware artifact, the same student quantized after training, for comparison
    (its agreement is with the float student)."""
    ptq = export.post_training_int8
    if not ptq:
        return ()
    p = ptq["parity"]
    return (
        (
            Code(ptq["file"]),
            f"{export.format}, {export.precision} post-training (comparison), {export.layout}",
            f"{ptq['size_bytes'] / 1e6:.2f} MB",
            _pct(p["top1_agreement"]),
            f"{p['max_abs_diff']:.2e}",
            _pct(p["artifact_accuracy"]),
        ),
    )


def _epoch_table(history: list[dict[str, Any]]) -> Table:
    # .get: a history.json from before a metric existed lacks its key, and resuming such a run must work.
    return Table(
        (
            "epoch",
            "train loss",
            "val accuracy",
            "val agreement with teacher",
            "val KL to teacher",
            "val ECE",
            "lr",
            "seconds",
        ),
        tuple(
            (
                str(m["epoch"]),
                f"{m['train_loss']:.4f}",
                _pct(m["val_accuracy"]),
                _pct(m.get("val_teacher_agreement")),
                _num(m.get("val_teacher_kl"), ".4f"),
                _num(m.get("val_ece"), ".4f"),
                _num(m.get("lr"), ".2e"),
                _num(m.get("seconds"), ".1f"),
            )
            for m in history
        ),
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)
