"""One exception family. Every message says what was seen, why it fails and what to do."""

from __future__ import annotations

from pathlib import Path


class EdgeKDError(Exception):
    """Base of every error edgekd raises on purpose; the CLI prints it without a traceback."""


class UnknownNameError(EdgeKDError, KeyError):
    """A name that is not in a registry (a target, a loss, a format, a model)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(EdgeKDError, ValueError):
    """A YAML file or option that is malformed: names the file, the field and what was expected."""


class DataError(EdgeKDError, ValueError):
    """An image folder that cannot be used: names the path."""


class TeacherError(EdgeKDError):
    """A teacher that cannot be loaded or built."""


class CheckpointError(EdgeKDError):
    """A checkpoint or cache entry that cannot be loaded safely (pickled code, truncated, foreign):
    `path` names the file and `reason` says what is wrong with it, so a caller that owns a cache can
    move it aside and rebuild."""

    def __init__(self, message: str, path: Path, reason: str = "") -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


class DiskFullError(EdgeKDError):
    """The file system ran out of space: names the mount, the file and how much to free."""


class ExportError(EdgeKDError):
    """A model that cannot be exported, or an artifact that fails its parity check."""


class DependencyError(EdgeKDError, ImportError):
    """An optional backend that is not installed: names the pip extra."""


class NoFeasibleStudentError(EdgeKDError):
    """Every candidate breaks one of the target's constraints."""


class RuntimeUnavailableError(EdgeKDError):
    """The runtime that executes an artifact cannot exist on this machine (Core ML off macOS)."""


class DeviceError(EdgeKDError):
    """A device cannot be reached, refuses the login, lacks a runtime, or its bench failed."""
