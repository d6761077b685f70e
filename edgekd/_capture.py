"""Where other libraries' output goes while a command runs: into a log file, not between edgekd's lines.

Converters and runtimes print in three ways, and each is caught where it starts:
- C++ logs (TensorFlow/LiteRT's absl, oneDNN, XNNPACK) are written straight to file descriptor 2,
  past Python: fd 2 itself is pointed at the log file (`os.dup2`) for the command's duration;
- Python code writing to `sys.stderr` (tqdm bars, torch's own log handler) writes to fd 2 as well;
- `warnings` and other libraries' `logging` records reach the log through a handler on the root
  logger (`logging.captureWarnings`).
edgekd's own lines reach the terminal through a duplicate of the original fd 2, taken before the
redirection (`captured_output` yields it and points the CLI's Rich console at it). With `--debug`
nothing is redirected: the libraries print to the terminal as they always do, and the log still
gets every Python log record. The environment variables that quieten TensorFlow or glog are left
alone on purpose: the redirection already keeps those lines off the terminal, and the log keeps
them whole for when a conversion fails.

The log starts under the cache (`logs/`, the newest few kept); a command with a run directory moves
it there (`move_log`), so that a run keeps its own log.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from edgekd.paths import default_cache_dir

KEPT_LOGS = 20  # logs of commands under the cache, newest kept
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _LogHandler(logging.StreamHandler):
    """Writes every record to the log, counting the bytes of edgekd's own, so that whatever else the
    file grew by is known to come from other libraries."""

    def __init__(self, stream: TextIO, debug: bool) -> None:
        super().__init__(stream)
        self.own_bytes = 0
        # Converters log every op they convert at INFO (coremltools: thousands of lines per model):
        # other libraries' records enter the log from WARNING up, all of them with --debug.
        self.others_from = logging.DEBUG if debug else logging.WARNING

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name.split(".")[0] == "edgekd"
        if not ours and record.levelno < self.others_from:
            return
        if ours:
            with contextlib.suppress(Exception):
                self.own_bytes += len((self.format(record) + self.terminator).encode("utf-8", "replace"))
        super().emit(record)


def _append_only(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _text_stream(fd: int) -> TextIO:
    """A line-buffered text stream on a duplicate of `fd` (closing it leaves `fd` open)."""
    return io.TextIOWrapper(os.fdopen(os.dup(fd), "wb", buffering=0), "utf-8", "replace", line_buffering=True)


class _CommandLog:
    """The log file of the command under way: its descriptor, the handler that writes Python's
    records into it, and whether fd 2 points at it."""

    def __init__(self, path: Path, debug: bool) -> None:
        self.path, self.redirected = path, not debug
        self._fd = _append_only(path)
        self.handler = _LogHandler(_text_stream(self._fd), debug)
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._not_libraries = path.stat().st_size  # what the file held before, and edgekd's header

    def header(self, command: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} edgekd {command} (pid {os.getpid()})\n"
        self.handler.stream.write(line)
        self.handler.flush()
        self._not_libraries += len(line.encode())

    def point_fd2_here(self) -> None:
        os.dup2(self._fd, 2)

    def move(self, destination: Path) -> None:
        """Append what is logged so far to `destination`, and log there from now on."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.handler.flush()
        before = destination.stat().st_size if destination.exists() else 0
        with open(destination, "ab") as out, open(self.path, "rb") as logged:
            shutil.copyfileobj(logged, out)
        fd = _append_only(destination)
        if self.redirected:
            os.dup2(fd, 2)
        self.handler.setStream(_text_stream(fd)).close()
        os.close(self._fd)
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._fd, self.path = fd, destination
        self._not_libraries += before

    def library_output(self) -> bool:
        """Whether other libraries wrote to the log (anything beyond edgekd's own lines)."""
        try:
            return self.path.stat().st_size > self._not_libraries + self.handler.own_bytes
        except OSError:
            return False

    def close(self) -> None:
        self.handler.close()
        self.handler.stream.close()
        os.close(self._fd)


_active: _CommandLog | None = None
_last_with_library_output: Path | None = None


def move_log(destination: Path) -> None:
    """Keep the command's log in `destination` from now on (a run directory's own log), with what it
    holds so far; outside a command, or when `destination` cannot be written, nothing changes."""
    if _active is None or _active.path == destination:
        return
    try:
        _active.move(destination)
    except OSError as e:
        logging.getLogger(__name__).debug("the log stays in %s: %s", _active.path, e)


def active_log() -> Path | None:
    """The log of the command under way, or None outside one."""
    return None if _active is None else _active.path


def last_log_with_library_output() -> Path | None:
    """The log of the command that ended last, if other libraries wrote to it: an error printed after
    the command can say where their messages are."""
    return _last_with_library_output


def forget_last_log() -> None:
    """A new command starts: the last one's log is no longer the one to name."""
    global _last_with_library_output
    _last_with_library_output = None


@contextlib.contextmanager
def captured_output(command: str, *, debug: bool, terminal_console=None) -> Iterator[TextIO]:
    """Run a command with other libraries' output in a log file. Yields the stream that reaches the
    terminal (what fd 2 was), and points `terminal_console` (a Rich console) at it meanwhile."""
    global _active, _last_with_library_output
    _last_with_library_output = None
    path = _new_log_path(command)
    if path is None or _active is not None:  # no writable place for a log, or one is open already
        yield sys.stderr
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    log = _CommandLog(path, debug)
    log.header(command)
    terminal = _text_stream(2)
    saved_fd2 = os.dup(2)
    root = logging.getLogger()
    root.addHandler(log.handler)
    logging.captureWarnings(True)
    faulthandler_ours = not faulthandler.is_enabled()
    if faulthandler_ours:  # a crash in native code still shows its Python stack on the terminal
        faulthandler.enable(file=terminal)
    console_file = None
    if terminal_console is not None:
        console_file, terminal_console.file = terminal_console._file, terminal
    if log.redirected:
        log.point_fd2_here()
    _active = log
    try:
        yield terminal
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved_fd2, 2)
        os.close(saved_fd2)
        _active = None
        if terminal_console is not None:
            terminal_console.file = console_file
        if faulthandler_ours:
            faulthandler.disable()
        logging.captureWarnings(False)
        root.removeHandler(log.handler)
        if log.library_output():
            _last_with_library_output = log.path
        log.close()
        terminal.close()


def _new_log_path(command: str) -> Path | None:
    logs = default_cache_dir() / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        for old in sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime)[: -KEPT_LOGS + 1]:
            old.unlink()
    except OSError:
        return None
    return logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{command}.log"
