"""Rich rendering for the CLI: progress bars for the core's `Observer` calls, and log lines above them."""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
# The stage or task the CLI last drew: an interrupted command says what it was doing.
activity: str | None = None


def _edgekd_info_or_any_warning(record: logging.LogRecord) -> bool:
    return record.name.startswith("edgekd") or record.levelno >= logging.WARNING


def setup_logging(debug: bool) -> None:
    """edgekd's own INFO lines (DEBUG with --debug); third-party libraries only from WARNING up,
    including loggers they create later."""
    handler = RichHandler(console=console, show_path=debug, show_time=False, markup=False)
    if not debug:
        handler.addFilter(_edgekd_info_or_any_warning)
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
    """Draws one bar per task under a line per pipeline stage."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
            console=console,
            transient=True,
        )

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stage(self, name: str, detail: str = "") -> None:
        global activity
        activity = name
        console.rule(f"[bold]{name}[/bold]" + (f" [dim]({detail})[/dim]" if detail else ""), align="left")

    def task(self, description: str, total: int | None) -> _RichTask:
        global activity
        activity = description
        return _RichTask(self.progress, self.progress.add_task(description, total=total, extra=""))
