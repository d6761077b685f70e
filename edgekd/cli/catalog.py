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

    from edgekd._console import fit_columns, identifier_column, wrapping_column
    from edgekd.targets import get_target, list_targets

    dirs = tuple(targets_dir or ())
    targets = [get_target(name, dirs) for name in list_targets(dirs)]
    devices = [
        (t.compute.accelerator or f"{t.compute.cores}× {t.compute.cpu}").split(" (")[0] for t in targets
    ]
    table = Table(title="edgekd targets")
    identifier_column(table, "name")
    wrapping_column(table, "runs on")
    wrapping_column(table, "peak GFLOP/s", justify="right")
    wrapping_column(table, "RAM MB", justify="right")
    wrapping_column(table, "runtime")
    wrapping_column(table, "precision")
    wrapping_column(table, "budget", justify="right")
    for t, device in zip(targets, devices, strict=True):
        table.add_row(
            t.name,
            device,
            f"{t.peak_gflops:g} {t.default_precision}",
            f"{t.memory.ram_mb:g}",
            # "litert xnnpack", not "litert/xnnpack": a runtime and its delegate wrap as whole words
            t.runtime + (f" {t.delegate}" if t.delegate else ""),
            " ".join(t.precisions),
            f"{t.budgets.latency_ms:g} ms",
        )
    console = Console()
    console.print(fit_columns(table, console))


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

    from edgekd._console import fit_columns, identifier_column, wrapping_column
    from edgekd.catalog import load_students, load_teacher_recipe

    students = load_students()
    table = Table(title="student candidates (models/students.yaml)")
    identifier_column(table, "timm arch")
    wrapping_column(table, "kwargs")
    wrapping_column(table, "notes")
    for c in students:
        table.add_row(c.arch, str(c.kwargs or ""), c.notes)
    console = Console()
    console.print(fit_columns(table, console))
    recipe = load_teacher_recipe()
    console.print(f"default teacher (models/teachers.yaml): {recipe}")


def search_command(
    target: Annotated[
        list[str],
        typer.Option("--target", metavar="NAME", help="A target (repeatable: one student for all)."),
    ],
    list_space: Annotated[
        bool, typer.Option("--list", help="Print the search space and its size, then stop.")
    ] = False,
    num_classes: Annotated[int, typer.Option(help="Classes of the task (sizes the head).")] = 10,
    targets_dir: TargetsDirOption = None,
) -> None:
    """The student search space for one or more targets, and which candidates they allow."""
    from rich.console import Console

    from edgekd._console import RichObserver, fit_columns, plural
    from edgekd.targets import get_target

    targets = [get_target(name, tuple(targets_dir or ())) for name in target]
    names = ", ".join(t.name for t in targets)
    # The bar starts before torch and timm are imported: a first run costs every candidate for
    # minutes (later ones read the cache), and the screen says so from the first second.
    with RichObserver() as observer:
        loading = observer.task(f"loading the student catalog for {names}", None)
        from edgekd.catalog import load_students
        from edgekd.search import assess, front, search_space
        from edgekd.search.constraints import candidate_costs

        candidates = load_students()
        space = search_space(candidates, targets)
        loading.close()
        if list_space:
            table = _space_table(candidates, space, names)
        else:
            sizes = sorted({size for _, size in space})
            costing = observer.task(
                f"costing {plural(len(candidates), 'candidate')} at {plural(len(sizes), 'input size')} "
                f"for {names}",
                len(space),
            )
            rows = []
            for size in sizes:
                at_size = [c for c, s in space if s == size]
                candidate_costs(at_size, size, num_classes)  # all at once: traced on every core
                assessed = []
                for candidate in at_size:
                    assessed += assess([candidate], targets, size, num_classes)
                    costing.advance()
                on_front = {id(a) for a in front(assessed)}
                rows += [(a, id(a) in on_front) for a in assessed]
            costing.close()
            table = _candidates_table(rows, targets, names)
    console = Console()
    console.print(fit_columns(table, console))


def _space_table(candidates, space, names: str):
    from rich.table import Table

    from edgekd._console import identifier_column, wrapping_column

    families = len({c.family for c in candidates})
    table = Table(
        title=f"search space for {names}: {len(candidates)} candidates from {families} families x "
        f"input sizes = {len(space)} (candidate, input size) pairs"
    )
    wrapping_column(table, "family")
    identifier_column(table, "timm arch")
    wrapping_column(table, "ImageNet top-1 % @ px")
    wrapping_column(table, "input sizes")
    wrapping_column(table, "notes")
    sizes = sorted({size for _, size in space})
    for candidate in candidates:
        top1 = candidate.imagenet_top1
        prior = "-" if top1 is None else f"{top1:.1f} @ {candidate.imagenet_size}"
        table.add_row(candidate.family, candidate.arch, prior, " ".join(map(str, sizes)), candidate.notes)
    return table


def _candidates_table(rows, targets, names: str):
    from rich.table import Table

    from edgekd._console import identifier_column, wrapping_column

    table = Table(
        title=f"candidates for {names} (predicted; * = on the Pareto front fit ranks on at that input size: "
        "latency on each target and peak memory down, MACs up)"
    )
    identifier_column(table, "arch")
    wrapping_column(table, "px", justify="right")
    for t in targets:
        wrapping_column(table, f"{t.name} ms", justify="right")
    wrapping_column(table, "peak MB", justify="right")
    wrapping_column(table, "status")
    for a, on_front in rows:
        marked = "feasible *" if on_front else "feasible"
        table.add_row(
            a.candidate.arch,
            str(a.input_size),
            *(f"{a.per_target[t.name].predicted_latency_ms:.2f}" for t in targets),
            f"{a.peak_memory_mb:.2f}",
            marked if a.feasible else "; ".join(a.reasons),
        )
    return table
