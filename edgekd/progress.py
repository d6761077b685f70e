"""How long work reports progress without the core printing anything.

The pipeline and the trainer call an `Observer`; the CLI passes one that draws rich progress bars,
library users get the silent default.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Task(Protocol):
    def advance(self, steps: int = 1, **fields: Any) -> None: ...

    def close(self) -> None: ...


class Observer(Protocol):
    """What a long job tells the one who started it. An observer may also have `run_directory(path)`,
    which `fit` calls (through `StageTracker`) once its run directory is known."""

    def stage(self, name: str, detail: str = "") -> None:
        """A pipeline stage starts (or is skipped: `detail` says why)."""

    def task(self, description: str, total: int | None) -> Task:
        """A countable piece of work inside a stage (an epoch's batches, a timing loop)."""


class _SilentTask:
    def advance(self, steps: int = 1, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class SilentObserver:
    def stage(self, name: str, detail: str = "") -> None:
        pass

    def task(self, description: str, total: int | None) -> Task:
        return _SilentTask()


class StageTracker:
    """Passes every call on to `observer` and remembers the stage under way and the run directory,
    so that an interrupted `fit` can say where it stopped and what resumes it."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer
        self.current: str | None = None
        self._run: str | None = None

    @property
    def run(self) -> str | None:
        return self._run

    @run.setter
    def run(self, path: str | None) -> None:
        self._run = path
        announce = getattr(self._observer, "run_directory", None)
        if path is not None and announce is not None:
            announce(path)

    def stage(self, name: str, detail: str = "") -> None:
        self.current = name
        log.debug("stage %s started", name)
        self._observer.stage(name, detail)

    def task(self, description: str, total: int | None) -> Task:
        return self._observer.task(description, total)
