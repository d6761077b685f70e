"""One exception family. Every message says what was seen, why it fails and what to do."""

from __future__ import annotations

from pathlib import Path


class EdgeKDError(Exception):
    """Base of every error edgekd raises on purpose; the CLI prints it without a traceback."""

    exit_code = 2  # the CLI's: the input or the options are wrong


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


class FileSystemError(EdgeKDError, OSError):
    """A file that could not be written: the disk is full, the file system is read-only, a directory
    on the path is a file. Names the file, what kind of file it is, and what to do."""

    exit_code = 1  # the machine, not the input, is at fault

    def __init__(self, message: str, errno: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.errno, self.filename = errno, path

    def __str__(self) -> str:  # OSError would format errno and strerror instead of the message
        return str(self.args[0])


class DiskFullError(FileSystemError):
    """The file system ran out of space while a cache was reserved or filled: names the mount, the file
    and how much to free."""

    def __init__(self, message: str, path: str | None = None) -> None:
        import errno

        super().__init__(message, errno.ENOSPC, path)


class Interrupted(EdgeKDError):
    """The user interrupted the work (Ctrl-C); `doing` says what was under way."""

    exit_code = 130  # the shell's code for a process stopped by SIGINT

    def __init__(self, doing: str, message: str | None = None) -> None:
        super().__init__(message or f"interrupted during {doing}")
        self.doing = doing


class RunInterrupted(Interrupted):
    """A `fit` interrupted in `stage`; `run` is the run directory `edgekd fit --resume` continues
    (None: interrupted before the run directory existed)."""

    def __init__(self, stage: str, run: str | None) -> None:
        resume = (
            f"; resume with: edgekd fit --resume {run}"
            if run is not None
            else " (before the run directory was created: nothing to resume)"
        )
        super().__init__(stage, f"interrupted during {stage}{resume}")
        self.stage, self.run = stage, run
