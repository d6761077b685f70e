"""One registry class for every extension point (targets, KD losses, export formats, runtimes, devices).

A duplicate name raises instead of silently overwriting; an unknown name raises with the close matches.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgekd.errors import EdgeKDError, UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str], max_listed: int = 40) -> str:
    """The sentence that closes an unknown-name error: the closest matches, then the valid names
    (all of them, unless there are more than `max_listed`)."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    if len(choices) > max_listed:
        return f"{hint} ({len(choices)} valid names.)"
    return f"{hint} Valid: {', '.join(sorted(choices)) or '(none)'}."


class Registry(Generic[T]):
    """Named entries of one kind.

    Example:
        >>> losses = Registry("KD loss")
        >>> @losses.register("kd")
        ... def kd(): ...
        >>> losses.names()
        ['kd']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise EdgeKDError(f"{self.kind} {name!r} is registered twice; names must be unique.")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            return self.add(name, entry)

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}.{did_you_mean(name, list(self._entries))}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
