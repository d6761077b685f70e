"""`edgekd latency`: the predictor's estimate for one model, its leave-one-out error, and its refit to a
target's profile rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.options import TargetsDirOption
from edgekd.errors import EdgeKDError

latency_app = typer.Typer(help="The latency predictor and its error (profiles/*.csv).", no_args_is_help=True)


@latency_app.command("predict")
def latency_predict(
    model: Annotated[str, typer.Argument(help="timm architecture, e.g. mobilenetv3_small_100.")],
    target: Annotated[str, typer.Option(help="Target name.")],
    input_size: Annotated[int | None, typer.Option(help="Square input size (default: the target's).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, fp16 or int8 (default: the target's).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: the target's).")] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Predicted latency of one model on a target, with its per-op-class breakdown."""
    from rich.console import Console
    from rich.table import Table

    from edgekd._console import RichObserver, plural
    from edgekd.targets import get_target

    t = get_target(target, tuple(targets_dir or ()))
    # The spinner starts before torch and timm are imported: building, tracing and (on a first run)
    # calibrating the cost model take minutes on a slow machine.
    with RichObserver() as observer:
        size = input_size or t.input_size
        observer.task(f"tracing {model} at {size} px and costing it on {t.name}", None)
        from edgekd.predict import predict_model

        p = predict_model(model, t, input_size=input_size, precision=precision, threads=threads)
    c = p.coefficients
    console = Console()
    if p.npu is not None:
        npu = p.npu
        console.print(
            f"{p.model} @ {p.input_size} px on {t.name}: {p.latency_ms:.3f} ms, "
            f"{npu.npu_ops}/{npu.npu_ops + npu.cpu_ops} ops on the NPU ({100 * npu.npu_op_share:.0f} %), "
            f"SRAM {npu.sram_bytes / 2**10:.0f} KiB, flash {npu.flash_bytes / 2**10:.0f} KiB"
        )
        for fallback in npu.cpu_fallbacks:
            console.print(f"  on the CPU: {fallback}")
        console.print(f"estimate: {c.provenance}")
        return
    table = Table(
        title=f"{p.model} @ {p.input_size} px on {t.name} ({c.runtime}, {c.precision}, "
        f"{plural(c.threads, 'thread')})"
    )
    table.add_column("op class")
    table.add_column("ms", justify="right")
    table.add_column("efficiency", justify="right")
    table.add_column("µs per op", justify="right")
    for name, ms in sorted(p.per_class_ms.items(), key=lambda kv: -kv[1]):
        if name == "invoke":
            table.add_row("per inference", f"{ms:.3f}", "", "")
        else:
            table.add_row(name, f"{ms:.3f}", f"{c.efficiency[name]:.3f}", f"{c.overhead_us[name]:.1f}")
    table.add_row("[bold]total", f"[bold]{p.latency_ms:.3f}", "", "")
    console.print(table)
    console.print(
        f"{p.macs / 1e6:.1f} M MACs, {p.params / 1e6:.2f} M params, "
        f"peak memory {p.peak_memory_bytes / 2**20:.2f} MB (weights + activation arena)"
    )
    console.print(f"calibration: {c.provenance}")


@latency_app.command("validate")
def latency_validate(
    target: Annotated[str, typer.Option(help="Target name.")],
    out: Annotated[
        Path | None, typer.Option(help="JSON output (default: benchmarks/results/latency-TARGET.json).")
    ] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Leave-one-out error of the predictor over each group of the target's profile rows."""
    from rich.console import Console
    from rich.table import Table

    from edgekd._console import RichObserver
    from edgekd.latency_validation import leave_one_out, write_validation
    from edgekd.targets import get_target

    t = get_target(target, tuple(targets_dir or ()))
    if t.latency_model.estimator == "vela":
        raise EdgeKDError(
            f"{t.name} is estimated by Arm's Vela compiler, not fitted to profile rows, so there is nothing "
            f"to leave out; benchmarks/vela_reference.py compares Vela with the published Ethos-U55 figure."
        )
    with RichObserver() as observer:
        results = leave_one_out(t, observer=observer)
    if not results:
        raise EdgeKDError(f"profiles/{t.name}.csv has no group of 3 or more rows to validate on.")
    table = Table(title=f"latency predictor, leave-one-out on profiles/{t.name}.csv")
    for column in (
        "runtime",
        "precision",
        "threads",
        "rows",
        "MAPE %",
        "±10 %",
        "±20 %",
        "Spearman",
        "priors only",
        "rows from",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r.runtime,
            r.precision,
            str(r.threads),
            str(r.rows),
            f"{r.mape:.1f}",
            f"{r.within_10:.0f} %",
            f"{r.within_20:.0f} %",
            "n/a" if r.spearman is None else f"{r.spearman:.3f}",
            f"{r.prior_mape:.1f} %",
            "publications" if r.published_only else "measurements",
        )
    console = Console()
    console.print(table)
    path = write_validation(results, out or Path("benchmarks") / "results" / f"latency-{t.name}.json")
    console.print(f"wrote {path}")


@latency_app.command("calibrate")
def latency_calibrate(
    target: Annotated[str, typer.Option(help="Target name.")],
    precision: Annotated[str | None, typer.Option(help="Default: the target's.")] = None,
    threads: Annotated[int | None, typer.Option(help="Default: the target's.")] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Refit the latency predictor to the target's profile rows; its error before and after."""
    from rich.console import Console
    from rich.table import Table

    from edgekd._console import fit_columns, identifier_column, plural, wrapping_column
    from edgekd.latency_validation import calibration_report
    from edgekd.targets import get_target

    if threads is not None and threads < 1:
        raise EdgeKDError(f"--threads {threads}: profile rows are of 1 thread or more.")
    report = calibration_report(get_target(target, tuple(targets_dir or ())), precision, threads)
    table = Table(title=f"{target}: predictor on {plural(len(report.rows), 'profile row')}")
    identifier_column(table, "model")
    for column in ("px", "measured ms", "before ms", "after ms"):
        wrapping_column(table, column, justify="right")
    wrapping_column(table, "source")
    for row, before, after in zip(report.rows, report.before_ms, report.after_ms, strict=True):
        table.add_row(
            row.model,
            str(row.input_size),
            f"{row.latency_ms_median:.3f}",
            f"{before:.3f}",
            f"{after:.3f}",
            row.source,
        )
    console = Console()
    console.print(fit_columns(table, console))
    console.print(
        f"mean absolute error: {report.before_mape:.1f} % before (priors), {report.after_mape:.1f} % after "
        f"(fitted on these rows; {report.coefficients.provenance})"
    )
