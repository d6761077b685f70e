"""Rich rendering for the CLI: progress bars for the core's `Observer` calls and log lines above them,
tables that keep names whole at any width, and the next steps a command ends with."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)
# The stage or task the CLI last drew: an interrupted command says what it was doing.
activity: str | None = None


def _edgekd_info_or_any_error(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] == "edgekd" or record.levelno >= logging.ERROR


class _TableHandler(RichHandler):
    """Draws a record that carries a table (`extra={"table": TextTable}`, e.g. fit's plan) as a Rich
    table fitted to the terminal, its first column whole; every other record as RichHandler does."""

    def render_message(self, record: logging.LogRecord, message: str):
        table = getattr(record, "table", None)
        if table is None:
            return super().render_message(record, message)
        drawn = Table(title=table.title, title_justify="left", box=None, pad_edge=False)
        identifier_column(drawn, table.header[0])
        for header in table.header[1:-1]:
            drawn.add_column(header, no_wrap=True, justify="right")
        wrapping_column(drawn, table.header[-1])
        for row in table.rows:
            drawn.add_row(*row)
        # the message sits right of the level column ("WARNING  "): the table gets what is left
        return fit_columns(drawn, self.console, self.console.width - 9)


def setup_logging(debug: bool) -> None:
    """On the terminal: edgekd's own INFO lines, and other libraries' records only from ERROR up
    (their warnings and Python's `warnings` go to the command's log, `edgekd._capture`), including
    loggers they create later; with --debug, every record from DEBUG up."""
    handler = _TableHandler(console=console, show_path=debug, show_time=False, markup=False)
    if not debug:
        handler.addFilter(_edgekd_info_or_any_error)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(message)s", handlers=[handler], force=True
    )


class _RichTask:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: int = 1, **fields: Any) -> None:
        extra = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self._progress.update(self._task, advance=steps, extra=extra)

    def close(self) -> None:
        self._progress.update(self._task, visible=False)
        self._progress.remove_task(self._task)


class RichObserver:
    """Draws one bar per task under a line per pipeline stage; `on_run` hears of `fit`'s run
    directory once it is known."""

    def __init__(self, on_run: Callable[[str], None] | None = None) -> None:
        self._on_run = on_run
        self.progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
            console=console,
            transient=True,
            # Other libraries' writes to sys.stderr go to fd 2, the command's log (edgekd._capture),
            # not above the bars.
            redirect_stderr=False,
        )

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_directory(self, path: str) -> None:
        if self._on_run is not None:
            self._on_run(path)

    def stage(self, name: str, detail: str = "") -> None:
        global activity
        activity = name
        console.rule(f"[bold]{name}[/bold]" + (f" [dim]({detail})[/dim]" if detail else ""), align="left")

    def task(self, description: str, total: int | None) -> _RichTask:
        global activity
        activity = description
        return _RichTask(self.progress, self.progress.add_task(description, total=total, extra=""))


def identifier_column(table: Table, header: str, **options: Any) -> None:
    """Add a column of names (models, targets, formats): `fit_columns` never wraps or cuts them."""
    table.add_column(header, no_wrap=True, **options)


def wrapping_column(table: Table, header: str, **options: Any) -> None:
    """Add a column that gives way to the identifiers: it wraps, and a word longer than the column
    folds onto the next line rather than losing its end to an ellipsis."""
    table.add_column(header, overflow="fold", **options)


def fit_columns(table: Table, console: Console, width: int | None = None) -> Table:
    """Size `table`'s wrapping columns for the console's width so that its identifier columns keep
    every name whole: the wrapping columns narrow down to their longest word, the one with the most
    room above it first, and only then below it (folding), the widest first. Rich's own squeeze
    narrows the widest columns whatever they hold: `mobilenetv3_sma…` at 80 columns. `width`: the
    room the table gets when something sits beside it (default: the whole console)."""
    wide = console.options.update_width(10**6)
    columns = table.columns
    measures = [
        [Measurement.get(console, wide, cell) for cell in (column.header, *column.cells)]
        for column in columns
    ]
    widest = [max(m.maximum for m in cells) for cells in measures]
    longest_word = [max(m.minimum for m in cells) for cells in measures]
    chrome = Measurement.get(console, wide, table).maximum - sum(widest)  # borders and padding
    widths, excess = list(widest), sum(widest) + chrome - (width or console.width)
    wrapping = [i for i, column in enumerate(columns) if not column.no_wrap]
    for floor in (longest_word, [1] * len(columns)):
        while excess > 0:
            shrinkable = [i for i in wrapping if widths[i] > floor[i]]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda i: widths[i] - floor[i])] -= 1
            excess -= 1
    for i in wrapping:
        columns[i].width = widths[i]
    return table


def plural(count: int, noun: str) -> str:
    """`1 thread`, `4 threads`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def print_next_steps(console: Console, steps: list[tuple[str, str]], log: str | None = None) -> None:
    """What to run next: each command on one line, never broken (a terminal wraps it for the eye, a
    copy takes it whole), under a comment saying what it is for; then where the log is."""
    console.print("[bold]next:[/bold]")
    for command, purpose in steps:
        console.print(f"  # {purpose}", style="dim", markup=False, highlight=False)
        console.print(f"  {command}", soft_wrap=True, markup=False, highlight=False)
    if log:
        console.print(
            "  # the log, with the converters' and runtimes' own messages", style="dim", markup=False
        )
        console.print(f"  {log}", soft_wrap=True, markup=False, highlight=False)
