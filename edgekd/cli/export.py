"""`edgekd export`: a run or checkpoint to deployable formats, and the table of what each became."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekd.errors import EdgeKDError


def export_command(
    source: Annotated[
        Path, typer.Argument(help="A `fit` run directory or an edgekd .safetensors checkpoint.")
    ],
    format_names: Annotated[
        str | None, typer.Option("--format", help="Comma-separated formats (tflite,coreml,openvino,onnx).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="Comma-separated precisions (fp32,fp16,int8); default: all a format has."),
    ] = None,
    all_formats: Annotated[
        bool, typer.Option("--all", help="Every format at every precision it supports.")
    ] = False,
    data: Annotated[
        Path | None, typer.Option(help="ImageFolder for parity and calibration (default: the run's data).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN/exports).")] = None,
    parity_images: Annotated[int, typer.Option(min=1, help="Validation images for the parity check.")] = 256,
    calibration_images: Annotated[
        int, typer.Option(min=1, help="Training images that calibrate int8.")
    ] = 256,
    parity_config: Annotated[
        Path | None, typer.Option(help="YAML of parity gates per precision (default: config/parity.yaml).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Threads for parity and host latency.")] = 1,
    latency: Annotated[bool, typer.Option("--latency/--no-latency", help="Time each artifact here.")] = True,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Decoded-image cache (default: user cache dir).")
    ] = None,
    bundle: Annotated[
        list[str] | None,
        typer.Option(
            help="Write OUT/<platform>/ for an app: android (.tflite with TFLite Metadata) or ios (Core ML "
            "classifier); repeatable. android adds tflite fp32 to the exports.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export a student to deployable formats, check each against PyTorch, and print the table."""
    from rich.console import Console

    from edgekd._capture import move_log
    from edgekd._config import check_directory
    from edgekd._console import RichObserver, fit_columns
    from edgekd._io import write_json_atomic
    from edgekd.artifact import FORMATS
    from edgekd.export.bundle import check_platforms
    from edgekd.export.parity import load_gates
    from edgekd.export.suite import export_inputs, export_matrix, merge_rows, read_exports, requested_pairs
    from edgekd.export_source import load_export_source
    from edgekd.report import update_after_export
    from edgekd.rundir import RunDir

    if all_formats and format_names:
        raise typer.BadParameter("--all exports every format; drop --format, or drop --all.")
    formats = (
        FORMATS.names() if all_formats or not format_names else [f.strip() for f in format_names.split(",")]
    )
    precisions = [p.strip() for p in precision.split(",")] if precision else None
    platforms = check_platforms(bundle or [])
    pairs = requested_pairs(formats, precisions)
    if "android" in platforms and ("tflite", "fp32") not in pairs:
        pairs.append(("tflite", "fp32"))  # the file the Android bundle carries, parity-checked like the rest
    for what, directory in (("--out", out), ("--cache-dir", cache_dir)):
        if directory is not None:
            check_directory(what, directory)
    gates = load_gates(parity_config)
    loaded = load_export_source(source, data, cache_dir)
    out_dir = out or loaded.out_dir
    move_log(RunDir(source).log if source.is_dir() else out_dir / "edgekd.log")
    earlier = read_exports(out_dir / "exports.json", loaded.arch)  # a bad file fails before any export
    inputs = export_inputs(loaded.data, parity_images, calibration_images)
    with RichObserver() as observer:
        rows = export_matrix(
            loaded.model,
            loaded.arch,
            inputs,
            out_dir=out_dir,
            pairs=pairs,
            gates=gates,
            threads=threads,
            latency=latency,
            format_options=loaded.format_options,
            observer=observer,
        )
    # Rows of earlier exports into the same directory stay, unless this run redid their format and precision.
    summary = write_json_atomic(
        out_dir / "exports.json", {"arch": loaded.arch, "rows": merge_rows(earlier, rows)}
    )
    console = Console()  # the table is the command's output: stdout; progress went to stderr
    console.print(fit_columns(_export_table(rows, f"edgekd export {loaded.arch} → {out_dir}"), console))
    for row in rows:
        if row.detail and row.status != "ok":
            console.print(f"[bold]{row.format} {row.precision}[/bold] ({row.status}): {row.detail}")
    console.print(f"wrote {summary}")
    update_after_export(out_dir, parity_images=len(inputs.targets))
    _next_steps(console, rows, out_dir)
    failed = [r for r in rows if r.failed]
    if platforms:
        _write_bundles(platforms, loaded, inputs.preprocessing, rows, out_dir, console)
    if failed:
        raise EdgeKDError(
            f"{len(failed)} of {len(rows) - 1} exports failed: "
            + ", ".join(f"{r.format} {r.precision} ({r.status})" for r in failed)
        )


def _next_steps(console, rows, out_dir: Path) -> None:
    from edgekd._capture import active_log
    from edgekd._console import print_next_steps

    shipped = [r for r in rows if r.file and r.status != "reference" and not r.failed]
    if not shipped:
        return
    # A file that runs here first (TFLite or ONNX), else any: `predict` and `profile` take it.
    first = min(shipped, key=lambda r: (r.format not in ("tflite", "onnx"), r.precision != "fp32"))
    artifact = out_dir / first.file
    steps = [
        (f"edgekd predict {artifact} IMAGE...", "its top labels for your images"),
        (f"edgekd profile {artifact} --device ssh://USER@HOST", "its latency on a device"),
    ]
    log = active_log()
    print_next_steps(console, steps, str(log) if log else None)


def _export_table(rows, title: str):
    from rich.table import Table

    from edgekd._console import identifier_column, wrapping_column

    table = Table(title=title)
    # "coreml fp16" in one column: a column less leaves the status room to wrap onto fewer lines.
    identifier_column(table, "artifact")
    wrapping_column(table, "status")
    for column in ("size MB", "accuracy %", "top-1 agree %", "host ms"):
        wrapping_column(table, column, justify="right")

    def number(value, scale=1.0, digits=2):
        return "—" if value is None else f"{value * scale:.{digits}f}"

    for r in rows:
        latency = number(r.latency_ms, digits=3)
        if r.latency_ms is not None and r.latency_ratio is not None and r.format != "pytorch":
            latency += f" ({r.latency_ratio:.2f}×)"
        table.add_row(
            f"{r.format} {r.precision}",
            r.status,
            number(r.size_mb),
            number(r.accuracy, 100),
            number(r.top1_agreement, 100),
            latency,
        )
    return table


def _write_bundles(platforms, loaded, preprocessing, rows, out_dir: Path, console) -> None:
    """The app bundles, from the tflite fp32 export of `rows` (Android, only if it passed parity) and
    from the model (iOS)."""
    from edgekd.artifact import load_artifact
    from edgekd.export.bundle import write_bundles
    from edgekd.export.suite import OK

    tflite = next(
        (
            load_artifact(Path(r.file))
            for r in rows
            if (r.format, r.precision, r.status) == ("tflite", "fp32", OK)
        ),
        None,
    )
    bundles = write_bundles(
        platforms,
        loaded.model,
        loaded.arch,
        preprocessing,
        out_dir,
        tflite=tflite,
        coreml_options=loaded.format_options.get("coreml"),
    )
    from edgekd.runtimes import can_run_here

    for written in bundles:
        note = (
            ""
            if written.platform != "ios" or can_run_here("coreml")
            else "; spec validated, Core ML cannot run here"
        )
        console.print(
            f"{written.platform} bundle: {written.directory} "
            f"({written.model.name}, labels.txt, README.md{note})"
        )
