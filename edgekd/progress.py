"""How long work reports progress without the core printing anything.

The pipeline and the trainer call an `Observer`; the CLI passes one that draws rich progress bars,
library users get the silent default.
"""

from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    def advance(self, steps: int = 1, **fields: Any) -> None: ...

    def close(self) -> None: ...


class Observer(Protocol):
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
