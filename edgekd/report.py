"""The run's reports, `report.md` and a self-contained `report.html`, and its `metrics.csv`, from a
fit's `FitResult` (what `result.json` holds).

Both reports render one document model (sections of paragraphs, tables and figures), so they carry the
same information and differ only in markup. A new figure is one drawing function in `edgekd.plots` and
one line in `make_plots`.

Example:
    >>> # write_reports(run, result)  # RunDir, FitResult: training-curves.png, report.md, report.html
"""

from __future__ import annotations

import base64
import csv
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edgekd._io import atomic_path, write_bytes_atomic, write_text_atomic
from edgekd.plots import CandidatePoint, pareto_plot, training_curves
from edgekd.training_time import report_line

if TYPE_CHECKING:
    from edgekd.fit_result import ExportRecord, FitResult, TargetResult
    from edgekd.rundir import RunDir


@dataclass(frozen=True)
class Plot:
    """One figure of the report.

    Attributes:
        title: the caption, in both reports.
        filename: the PNG's name in the run directory, which `report.md` links to.
        png: the image; `report.html` inlines it so the file stands alone.
    """

    title: str
    filename: str
    png: bytes


class Code(str):
    """Text that the reports set as code, such as a file name."""


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Section:
    heading: str
    blocks: tuple[str | Table | Plot, ...]  # a str is a paragraph


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

    Example:
        >>> # write_reports(RunDir(Path("runs/20250101-120000-pi5"), ("pi5",)), result)
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
    lines: list[str] = []
    for index, section in enumerate(_document(result, plots)):
        lines += [f"{'#' if index == 0 else '##'} {_md_text(section.heading)}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append(_md_row(block.header))
                lines.append("| " + " | ".join(("---",) * len(block.header)) + " |")
                lines += [_md_row(row) for row in block.rows]
            elif isinstance(block, Plot):
                lines.append(f"![{_md_text(block.title)}]({quote(block.filename)})")
            else:
                lines.append(_md_line(block))
            lines.append("")
    return "\n".join(lines)


def render_html(result: FitResult, plots: Sequence[Plot] = ()) -> str:
    """The report as one self-contained HTML file: inline CSS, figures as data URIs, no scripts.

    Every piece of text from `result` is HTML-escaped.

    Args:
        result: the fit's result.
        plots: the figures, as `make_plots` draws them.
    """
    sections = _document(result, plots)
    body: list[str] = []
    for index, section in enumerate(sections):
        tag = "h1" if index == 0 else "h2"
        body.append(f"<{tag}>{_esc(section.heading)}</{tag}>")
        for block in section.blocks:
            if isinstance(block, Table):
                body.append(_html_table(block))
            elif isinstance(block, Plot):
                data = base64.b64encode(block.png).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(block.title)}">'
                    f"<figcaption>{_esc(block.title)}</figcaption></figure>"
                )
            else:
                body.append(f"<p>{_esc(block)}</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(sections[0].heading)}</title>\n<style>\n{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


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
                    ("where", "how", "median ms", "p90 ms"),
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
    if not lat:
        return ()
    return (
        (
            f"this host: {lat['device']}",
            f"measured, {lat['runtime']} {lat['runtime_version']}, {lat['threads']} threads, "
            f"{lat['runs']} runs",
            f"{lat['median_ms']:.3f}",
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


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md_cell(cell) for cell in cells) + " |"


def _md_cell(cell: str) -> str:
    if not isinstance(cell, Code):
        return _md_text(cell)
    # Markdown and HTML are inert in a code span; only a backtick run as long as its fence would end
    # it, so the fence is one longer than the longest run. A table splits cells on "|" before it reads
    # code spans, so that is escaped even here.
    text = str(cell).replace("\n", " ").replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# Characters that start Markdown inline syntax (emphasis, links, images, code, raw HTML and entities,
# strikethrough, table cells) anywhere in a line.
_MD_INLINE = re.compile(r"[\\`*\[\]<>&!|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# What makes a paragraph a heading, quote, list item or rule when it comes first in its line.
_MD_BLOCK_START = re.compile(r"^(\s*)([#>+\-=]|\d{1,9}(?=[.)]))")


def _md_text(text: str) -> str:
    """`text` as literal inline Markdown: every character that could start a link, an image, emphasis,
    code or raw HTML is backslash-escaped (CommonMark renders an escaped punctuation character as
    itself), and a newline becomes a space. Intraword underscores (model names) stay as they are."""
    flat = " ".join(str(text).splitlines())
    return _MD_INLINE.sub(lambda m: "\\" + m.group(0), flat)


def _md_line(text: str) -> str:
    """`text` as a literal Markdown paragraph: inline syntax escaped, and a first character that would
    make the line a block (a heading, quote, list or rule) escaped too; after "1" of "1. " the mark."""
    escaped = _md_text(text)
    match = _MD_BLOCK_START.match(escaped)
    if match is None:
        return escaped
    at = match.end() if match.group(2).isdigit() else match.start(2)
    return escaped[:at] + "\\" + escaped[at:]


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html_table(table: Table) -> str:
    def cell(tag: str, value: str) -> str:
        inner = f"<code>{_esc(value)}</code>" if isinstance(value, Code) else _esc(value)
        return f"<{tag}>{inner}</{tag}>"

    head = "".join(cell("th", h) for h in table.header)
    rows = "\n".join("<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in table.rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


_CSS = """\
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1f24; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.75rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; }
code { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; }
figcaption { color: #57606a; font-size: 0.9rem; }
"""
