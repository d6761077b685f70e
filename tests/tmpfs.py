"""A small tmpfs for a test: a disk that fills up, or a file system mounted read-only. Mounting needs
root (or CAP_SYS_ADMIN); where it is refused, the caller skips with the reason."""

from __future__ import annotations

import atexit
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


def mount(directory: Path, size: str, *, read_only: bool = False) -> str | None:
    """Mount a tmpfs of `size` (mount's syntax: 512k, 4m) on `directory`; None, or why it failed."""
    directory.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True, text=True
    )
    if done.returncode != 0:
        return f"cannot mount a tmpfs here ({(done.stderr or done.stdout).strip() or done.returncode})"
    return None


def resize(directory: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(directory)], check=True, capture_output=True)


def unmount(directory: Path) -> None:
    subprocess.run(["umount", str(directory)], capture_output=True)


@contextlib.contextmanager
def tmpfs(directory: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """The mounted directory, unmounted afterwards; skips the test where mounting is refused."""
    import pytest

    reason = mount(directory, size, read_only=read_only)
    if reason:
        pytest.skip(reason)
    try:
        yield directory
    finally:
        unmount(directory)


def read_only_dir(directory: Path) -> Path:
    """A read-only tmpfs on `directory` (root ignores chmod, not a read-only mount), unmounted when the
    test process exits: for a case that has no teardown of its own. Skips where mounting is refused."""
    import pytest

    reason = mount(directory, "64k", read_only=True)
    if reason:
        pytest.skip(reason)
    atexit.register(unmount, directory)
    return directory
