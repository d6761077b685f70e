"""The run's reports, `report.md` and a self-contained `report.html`, and its `metrics.csv`, from a
fit's `FitResult` (what `result.json` holds).

Both reports render one document model (`edgekd.report_markup`: sections of paragraphs, tables and
figures), so they carry the same information and differ only in markup. A new figure is one drawing
function in `edgekd.plots` and one line in `make_plots`. What the report says a run got (the headline
against the teacher, the per-class evidence, every artifact) is computed in `edgekd.report_evidence`;
`regenerate` writes the report again from a run directory (`edgekd report`), `update_after_export`
after `edgekd export` wrote into one.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd._io import atomic_path, write_bytes_atomic, write_json_atomic, write_text_atomic
from edgekd.plots import CandidatePoint, pareto_plot, training_curves
from edgekd.report_evidence import (
    CONFUSION,
    EXAMPLES,
    LaterExports,
    bundle_lines,
    class_plots,
    class_section,
    data_section,
    headline,
    later_export_rows,
    predicted_against_measured,
    read_later_exports,
    split_phrase,
)
from edgekd.report_markup import Code, Plot, Section, Table, html_page, markdown
from edgekd.stage_plan import stage_times_section
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


def make_plots(result: FitResult, run_path: Path | None = None) -> list[Plot]:
    """Draw the report's figures; one that has no data to show is left out.

    Args:
        result: the fit's result.
        run_path: the run directory, where the misclassified examples' images are (None: not drawn).

    Returns:
        The figures in the order the reports show them.
    """
    plots = class_plots(result, run_path)
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
            png = pareto_plot(points, budget_ms=record.target.budget_ms, target=name)
            if png is None:
                continue
            trained = sum(p.accuracy is not None for p in points)
            scored = "after full training" if search.get("mode") == "confirm" else "first-rung"
            evidence = f"{trained} of {len(points)} candidates trained; {scored} validation accuracy"
            if len(records) == 1:
                title, filename = f"Student search on {name}: Pareto front ({evidence})", "search-pareto.png"
            else:
                title = f"Student search, latency on {name}: front of all targets ({evidence})"
                filename = f"search-pareto-{name}.png"
            plots.append(Plot(title, filename, png))
    return plots


def regenerate(run_path: Path) -> list[Path]:
    """`edgekd report RUN`: the reports and figures written again from the run's result.json (and its
    exports.json, misclassified images). Raises `ConfigError` naming the file when it is missing or
    not a finished run's result."""
    import json

    from edgekd.errors import ConfigError
    from edgekd.fit_result import FitResult
    from edgekd.rundir import RunDir

    path = RunDir(run_path).result
    if not path.is_file():
        raise ConfigError(f"{path}: no result.json; a run directory holds one once its fit finished.")
    try:
        result = FitResult.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not an edgekd result.json ({e}).") from e
    return write_reports(RunDir(run_path, tuple(r.target.name for r in result.targets)), result)


def update_after_export(out_dir: Path, parity_split: str = "validation", parity_images: int | None = None):
    """What `edgekd export` calls after writing `out_dir/exports.json`: record in it which split and
    how many images its parity used, and, when `out_dir` is a finished fit run's `exports/` (or a
    target's folder in it), write that run's report again so its artifacts table lists the new files.
    Returns the report's path, or None when `out_dir` belongs to no run."""
    import json

    from edgekd.rundir import RunDir

    summary_path = Path(out_dir) / "exports.json"
    summary = json.loads(summary_path.read_text())
    summary["parity"] = {"split": parity_split, "images": parity_images}
    write_json_atomic(summary_path, summary)
    here = Path(out_dir).resolve()
    for run in (RunDir(here.parent), RunDir(here.parent.parent)):
        if run.result.is_file() and here.is_relative_to(run.path / "exports"):
            regenerate(run.path)
            return run.report_html
    return None


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
    plots = make_plots(result, run.path)
    later = read_later_exports(run.path)
    bundles = bundle_lines(run.path)
    written = [write_bytes_atomic(run.path / plot.filename, plot.png) for plot in plots]
    written.append(write_text_atomic(run.report_md, render_markdown(result, plots, later, bundles)))
    written.append(write_text_atomic(run.report_html, render_html(result, plots, later, bundles)))
    return written


def render_markdown(
    result: FitResult,
    plots: Sequence[Plot] = (),
    later: LaterExports | None = None,
    bundles: Sequence[str] = (),
) -> str:
    """The report as Markdown; figures are links to their PNG files beside `report.md`.

    Args:
        result: the fit's result.
        plots: the figures, as `make_plots` draws them.
        later: what `edgekd export` wrote into the run since (`read_later_exports`).
        bundles: a sentence per app bundle in the run (`bundle_lines`).
    """
    return markdown(_document(result, plots, later, bundles))


def render_html(
    result: FitResult,
    plots: Sequence[Plot] = (),
    later: LaterExports | None = None,
    bundles: Sequence[str] = (),
) -> str:
    """The report as one self-contained HTML file: inline CSS, figures as data URIs, no scripts.

    Every piece of text from `result` is HTML-escaped.

    Args:
        result: the fit's result.
        plots: the figures, as `make_plots` draws them.
        later: what `edgekd export` wrote into the run since (`read_later_exports`).
        bundles: a sentence per app bundle in the run (`bundle_lines`).
    """
    return html_page(_document(result, plots, later, bundles))


def _document(
    result: FitResult, plots: Sequence[Plot], later: LaterExports | None = None, bundles: Sequence[str] = ()
) -> list[Section]:
    """What the reports say, independent of markup."""
    s, data = result.student, result.data
    records = result.targets
    names = ", ".join(r.target.name for r in records)
    described = " ".join(f"{r.target.description}." for r in records)
    top = headline(result)
    class_figures = tuple(p for p in plots if p.filename in (CONFUSION, EXAMPLES))
    sections = [
        Section(
            f"edgekd fit: {s.arch} for {names}",
            (
                f"{described} Data: {data.name} "
                f"({data.train}/{data.val}/{data.test} train/val/test images, "
                f"{data.num_classes} classes, {data.input_size} px).",
                top.table,
                *top.notes,
                predicted_against_measured(result),
                f"Teacher: {result.teacher.source}.",
                f"Student choice: {s.reason}",
                *([kept] if (kept := retention_sentence(result)) else []),
                *([f"Distillation: {s.distillation}."] if s.distillation else []),
                *([f"Training views: {result.augmentation['why']}."] if result.augmentation else []),
                *_baseline_lines(result.baseline, s.test_accuracy),
                *report_line(result.plan),
            ),
        ),
        data_section(result),
        class_section(result, class_figures),
        Section("Artifacts", (*_artifact_blocks(result, later), *bundles)),
        Section(
            "Latency",
            (
                Table(
                    ("predicted for", "threads", "precision", "ms", "how"),
                    tuple(
                        (
                            r.target.name,
                            _num(r.target.threads, "d"),
                            r.target.default_precision,
                            f"{r.predicted_latency_ms:.2f}",
                            r.predicted_by,
                        )
                        for r in records
                    ),
                ),
                Table(
                    ("measured on this host", "artifact", "how", "ms", "p90 ms"),
                    (
                        *(
                            row
                            for r in records
                            if not r.shared_with
                            for row in _host_latency_rows(r.host_latency, r.export.file)
                        ),
                        *_teacher_latency_rows(result.teacher_latency),
                    ),
                ),
                "This host is not the target: its figures compare the student with the teacher and the "
                "formats with each other, not with the prediction.",
                *_cold_start_lines(records),
                *_device_lines(result.device_latency),
                *_device_layers(result.device_latency),
            ),
        ),
        Section("Distillation", (_epoch_table(result.history, data.val),)),
    ]
    if (times := stage_times_section(result.stages)) is not None:
        sections.append(times)
    others = tuple(p for p in plots if p not in class_figures)
    if others:
        sections.append(Section("Figures", others))
    return sections


def _artifact_blocks(result: FitResult, later: LaterExports | None) -> tuple[str | Table, ...]:
    """Every artifact of the run in one table: fit's (parity on the whole test split) and, when
    `edgekd export` wrote into the run since, its rows (parity on validation images)."""
    records = result.targets
    several = len(records) > 1
    fit_rows = tuple(
        (*row[:1], "fit" + (f" ({_shipped_to(r, records)})" if several else ""), *row[1:])
        for r in records
        if not r.shared_with
        for row in _export_rows(r.export, _host_ms(r.host_latency))
    )
    blocks: list[str | Table] = [
        Table(
            (
                "artifact",
                "made by",
                "what",
                "status",
                "size",
                "top-1 agreement",
                "max abs logit diff",
                "accuracy",
                "host ms",
            ),
            fit_rows + (later_export_rows(later) if later else ()),
        ),
        "Top-1 agreement is with the PyTorch student on the same images. fit checks its artifacts on "
        f"the whole test split ({result.data.test:,} images).",
    ]
    if later is not None:
        blocks.append(
            f"edgekd export ({later.file}) checks on {split_phrase(later.split, later.images)}"
            f"{'' if later.images is not None else ' (count not recorded)'}; its host ms is the median."
        )
    return tuple(blocks)


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
    short = f"{sentence}, short of the {100 * wanted:g} % asked for (--min-retention): "
    if search.get("mode") == "confirm":
        return short + (
            "the search passed it after its full training on the validation split, where the interval of "
            "its accuracy reached the bar; on this few images the two splits can disagree by that much. "
            "More data, or --objective accuracy for a larger student, would settle it."
        )
    if not search.get("trials"):  # named with --student, or the only candidate: nothing judged it
        return short + (
            "no trial measured it before its final training. More --epochs, or --objective accuracy "
            "for a larger student, would narrow the gap."
        )
    return short + (
        "the trials judged it against the best trial, not the teacher. More --epochs, or --objective "
        "accuracy for a larger student, would narrow the gap."
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


def _export_rows(e: ExportRecord, host_ms: str = "") -> tuple[tuple[str, ...], ...]:
    """One artifact's row (without its "made by"), its parity on the test split, and its post-training
    comparison if any."""
    parity = e.parity
    return (
        (
            Code(e.file),
            f"{e.format}, {e.precision}"
            + (" quantization-aware" if e.quantization_aware else "")
            + f", {e.layout}",
            "shipped" if parity else (e.parity_note or "not run"),
            f"{e.size_bytes / 1e6:.2f} MB",
            *(
                (_pct(parity["top1_agreement"]), f"{parity['max_abs_diff']:.2e}", _accuracy_on(parity))
                if parity
                else ("n/a", "", "n/a")
            ),
            host_ms,
        ),
        *_post_training_row(e),
    )


def _host_ms(latency: dict[str, Any] | None) -> str:
    from edgekd.devices import central_figure

    return "" if not latency else f"{central_figure(latency)[1]:.3f}"


def _accuracy_on(parity: dict[str, Any]) -> str:
    """An artifact's accuracy and the images it was measured on (fit: the test split)."""
    return f"{_pct(parity['artifact_accuracy'])} ({split_phrase('test', parity.get('samples'))})"


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
    threads = m["latency"].get("threads")
    return (
        f"Measured on {device['device']} ({device['uri']}; {where}): {device['measured_ms']:.3f} ms "
        f"{device['statistic']} over {m['latency']['runs']} runs"
        + (f", {threads} thread{'s' if threads != 1 else ''}." if threads is not None else "."),
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


def _host_latency_rows(lat: dict[str, Any] | None, what: str) -> tuple[tuple[str, ...], ...]:
    from edgekd.devices import central_figure, runtime_description

    if not lat:
        return ()
    statistic, figure = central_figure(lat)
    return (
        (
            lat["device"],
            Code(what),
            f"{statistic}, {runtime_description(lat)}, {lat['runs']} runs",
            f"{figure:.3f}",
            f"{lat['p90_ms']:.3f}",
        ),
    )


def _teacher_latency_rows(timed: dict[str, Any] | None) -> tuple[tuple[str, ...], ...]:
    """The teacher, exported like the student and timed here the same way (cached per teacher)."""
    if not timed or "latency" not in timed:
        return ()
    return _host_latency_rows(
        timed["latency"], f"teacher {timed['arch']} ({timed['format']} {timed['precision']})"
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
            "comparison, not shipped",
            f"{ptq['size_bytes'] / 1e6:.2f} MB",
            _pct(p["top1_agreement"]),
            f"{p['max_abs_diff']:.2e}",
            _accuracy_on(p),
            "",
        ),
    )


def _epoch_table(history: list[dict[str, Any]], val_images: int) -> Table:
    # .get: a history.json from before a metric existed lacks its key, and resuming such a run must work.
    return Table(
        (
            "epoch",
            "train loss",
            f"val accuracy ({split_phrase('validation', val_images)})",
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
