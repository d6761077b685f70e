"""The `edgekd` command: a thin Typer layer over the public API. It parses options, renders results
and owns the exit codes; the logic lives in the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgekd import __version__
from edgekd.errors import EdgeKDError

app = typer.Typer(
    help="Distil a large vision model into a small one that fits a real edge device.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
targets_app = typer.Typer(help="Hardware targets (targets/*.yaml).", no_args_is_help=True)
models_app = typer.Typer(help="The student and teacher catalog (models/*.yaml).", no_args_is_help=True)
app.add_typer(targets_app, name="targets")
app.add_typer(models_app, name="models")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    from edgekd._console import setup_logging

    setup_logging(debug)


@app.command()
def fit(
    target: Annotated[str | None, typer.Option(help="Target name (see `edgekd targets list`).")] = None,
    teacher: Annotated[
        str | None, typer.Option(help="timm model name or an edgekd checkpoint; default: train one.")
    ] = None,
    teacher_weights: Annotated[
        Path | None, typer.Option(help="Local .pth/.safetensors weights for a timm --teacher.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="ImageFolder directory (train/[val/][test/]); default: digits.")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Square input size in pixels.")] = None,
    student: Annotated[str | None, typer.Option(help="Consider only this student architecture.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Distillation epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW, one-cycle).")] = None,
    temperature: Annotated[float | None, typer.Option(help="KD temperature T.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the KD term (1-alpha on labels).")] = None,
    teacher_epochs: Annotated[
        int | None, typer.Option(help="Epochs when edgekd trains or fine-tunes the teacher.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads for host parity and latency.")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Where run directories are created.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Teacher cache (default: user cache dir).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML with any of these options (keys = option names).")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run directory.")] = None,
) -> None:
    """Choose, distil, export and measure a student for a target."""
    options = dict(locals())
    from edgekd._console import RichObserver, console
    from edgekd.pipeline import FitConfig
    from edgekd.pipeline import fit as run_fit

    overrides = {k: v for k, v in options.items() if k not in ("config", "resume") and v is not None}
    try:
        fit_config = FitConfig.from_yaml(config, **overrides) if config else FitConfig(**overrides)
    except EdgeKDError:
        raise
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    with RichObserver() as observer:
        result = run_fit(fit_config, resume=resume, observer=observer)
    _print_summary(console, result)


def _print_summary(console, result) -> None:
    from rich.table import Table

    s, t, e, lat = result["student"], result["teacher"], result["export"], result["host_latency"]
    table = Table(title=f"edgekd fit → {result['run']}", show_header=False)
    table.add_row("teacher", f"{t['arch']}: test accuracy {100 * t['test_accuracy']:.2f} %")
    table.add_row(
        "student", f"{s['arch']}: test accuracy {100 * s['test_accuracy']:.2f} %, {s['params']:,} params"
    )
    table.add_row("predicted latency", f"{s['predicted_latency_ms']:.2f} ms on {s['predicted_for']}")
    table.add_row(
        "export",
        f"{e['file']}: {e['size_bytes'] / 1e6:.2f} MB, top-1 agreement "
        f"{100 * e['parity']['top1_agreement']:.2f} %, max |Δlogit| {e['parity']['max_abs_diff']:.1e}",
    )
    table.add_row(
        "host latency",
        f"median {lat['median_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({lat['threads']} threads)",
    )
    table.add_row("report", f"{result['run']}/report.md")
    console.print(table)


@targets_app.command("list")
def targets_list() -> None:
    """Every known target, one row each."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.targets import get_target, list_targets

    table = Table(title="edgekd targets")
    for column in ("name", "compute", "fp32 GFLOP/s", "RAM", "runtime", "format", "precisions", "budget"):
        table.add_column(column)
    for name in list_targets():
        t = get_target(name)
        table.add_row(
            t.name,
            f"{t.compute.cores}× {t.compute.cpu} @ {t.compute.clock_ghz:g} GHz",
            f"{t.compute.peak_gflops.get('fp32', float('nan')):g}",
            f"{t.memory.ram_mb:g} MB",
            t.runtime + (f"/{t.delegate}" if t.delegate else ""),
            t.format,
            ", ".join(t.precisions),
            f"{t.budgets.latency_ms:g} ms",
        )
    Console().print(table)


@targets_app.command("show")
def targets_show(name: Annotated[str, typer.Argument(help="Target name.")]) -> None:
    """One target's every field, with the source of each number."""
    from rich.console import Console
    from rich.table import Table

    from edgekd._config import to_mapping
    from edgekd.targets import citation_for, get_target

    target = get_target(name)
    table = Table(title=f"target {target.name}")
    for column in ("field", "value", "source"):
        table.add_column(column, overflow="fold")

    def rows(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                rows(f"{prefix}.{k}" if prefix else k, v)
        else:
            table.add_row(prefix, str(value), citation_for(prefix, target.sources) or "")

    rows("", {k: v for k, v in to_mapping(target).items() if k != "sources"})
    Console().print(table)


@models_app.command("list")
def models_list() -> None:
    """The student candidates and the default teacher recipe."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.catalog import load_students, load_teacher_recipe

    table = Table(title="student candidates (models/students.yaml)")
    for column in ("timm arch", "kwargs", "notes"):
        table.add_column(column)
    for c in load_students():
        table.add_row(c.arch, str(c.kwargs or ""), c.notes)
    console = Console()
    console.print(table)
    recipe = load_teacher_recipe()
    console.print(f"default teacher (models/teachers.yaml): {recipe}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, print `EdgeKDError`s as one line, and return the exit code."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    try:
        command.main(args=args, prog_name="edgekd", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 130
    except typer.TyperException as e:  # usage errors: bad option values, unknown options
        e.show()
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        typer.echo("Interrupted; `edgekd fit --resume RUN_DIR` continues a run.", err=True)
        return 130
    except EdgeKDError as e:
        if _state["debug"]:
            raise
        typer.secho(f"error: {e}", err=True, fg="red")
        return 2
    return 0


def run() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
