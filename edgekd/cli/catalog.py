"""What edgekd knows before it trains: `edgekd targets`, `edgekd models` and `edgekd search` (the
student search space for some targets, and which candidates they allow)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekd.cli.options import TargetsDirOption

targets_app = typer.Typer(help="Hardware targets (targets/*.yaml).", no_args_is_help=True)
models_app = typer.Typer(help="The student and teacher catalog (models/*.yaml).", no_args_is_help=True)


@targets_app.command("list")
def targets_list(targets_dir: TargetsDirOption = None) -> None:
    """Every known target, one row each."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.targets import get_target, list_targets

    table = Table(title="edgekd targets")
    for column in ("name", "runs on", "peak GFLOP/s", "RAM MB", "runtime", "precisions", "budget"):
        table.add_column(column)
    dirs = tuple(targets_dir or ())
    for name in list_targets(dirs):
        t = get_target(name, dirs)
        device = t.compute.accelerator or f"{t.compute.cores}× {t.compute.cpu}"
        table.add_row(
            t.name,
            device.split(" (")[0],
            f"{t.peak_gflops:g} {t.default_precision}",
            f"{t.memory.ram_mb:g}",
            t.runtime + (f"/{t.delegate}" if t.delegate else ""),
            ",".join(t.precisions),
            f"{t.budgets.latency_ms:g} ms",
        )
    Console().print(table)


@targets_app.command("show")
def targets_show(
    name: Annotated[str, typer.Argument(help="Target name.")], targets_dir: TargetsDirOption = None
) -> None:
    """One target's every field, with the source of each number."""
    from rich.console import Console
    from rich.table import Table

    from edgekd._config import to_mapping
    from edgekd.targets import citation_for, get_target

    target = get_target(name, tuple(targets_dir or ()))
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


def search_command(
    target: Annotated[
        list[str], typer.Option("--target", help="A target (repeatable: one student for all).")
    ],
    list_space: Annotated[
        bool, typer.Option("--list", help="Print the search space and its size, then stop.")
    ] = False,
    num_classes: Annotated[int, typer.Option(help="Classes of the task (sizes the head).")] = 10,
    targets_dir: TargetsDirOption = None,
) -> None:
    """The student search space for one or more targets, and which candidates they allow."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.catalog import load_students
    from edgekd.search import assess, front, search_space
    from edgekd.targets import get_target

    targets = [get_target(name, tuple(targets_dir or ())) for name in target]
    candidates = load_students()
    space = search_space(candidates, targets)
    console = Console()
    names = ", ".join(t.name for t in targets)
    if list_space:
        families = len({c.family for c in candidates})
        table = Table(
            title=f"search space for {names}: {len(candidates)} candidates from {families} families x "
            f"input sizes = {len(space)} (candidate, input size) pairs"
        )
        for column in ("family", "timm arch", "ImageNet top-1 @px", "input sizes", "notes"):
            table.add_column(column)
        sizes = sorted({size for _, size in space})
        for candidate in candidates:
            top1 = candidate.imagenet_top1
            prior = "-" if top1 is None else f"{top1:.1f} @{candidate.imagenet_size}"
            table.add_row(candidate.family, candidate.arch, prior, " ".join(map(str, sizes)), candidate.notes)
        console.print(table)
        return
    table = Table(
        title=f"candidates for {names} (predicted; * = on the Pareto front fit ranks on at that input size: "
        "latency on each target and peak memory down, MACs up)"
    )
    for column in ("arch", "px", *(f"{t.name} ms" for t in targets), "peak MB", "status"):
        table.add_column(column, justify="left" if column in ("arch", "status") else "right")
    for size in sorted({size for _, size in space}):
        assessed = assess([c for c, s in space if s == size], targets, size, num_classes)
        on_front = {id(a) for a in front(assessed)}
        for a in assessed:
            marked = "feasible *" if id(a) in on_front else "feasible"
            status = marked if a.feasible else "; ".join(a.reasons)
            table.add_row(
                a.candidate.arch,
                str(size),
                *(f"{a.per_target[t.name].predicted_latency_ms:.2f}" for t in targets),
                f"{a.peak_memory_mb:.2f}",
                status,
            )
    console.print(table)
