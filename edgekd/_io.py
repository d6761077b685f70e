"""Atomic writes: a reader never sees half a file, and an interrupted write leaves the old one intact.
A write that fails for want of space, permission or a directory raises `FileSystemError`, naming the
file, what kind of file it is and what to do."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from edgekd.errors import DiskFullError, EdgeKDError, FileSystemError

T = TypeVar("T")
log = logging.getLogger(__name__)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_MB = 1 << 20

# What a file is, by its suffix, for the message that says it could not be written.
FILE_KINDS = {
    ".pt": "a training checkpoint",
    ".safetensors": "model weights",
    ".tflite": "a TFLite model",
    ".onnx": "an ONNX model",
    ".data": "an ONNX model's weights",
    ".xml": "an OpenVINO model",
    ".bin": "an OpenVINO model's weights",
    ".json": "a JSON record",
    ".yaml": "a YAML file",
    ".csv": "a CSV table",
    ".md": "a report",
    ".html": "a report",
    ".png": "a plot",
    ".npy": "a cached array",
    ".mlpackage": "a Core ML package",
}
# How writers that do not raise OSError report one (safetensors: "os error 28"; torch.save: "file write
# failed"; OpenVINO: "iostream error"). Some remove their partial file, so the disk no longer looks full.
WRITER_IO_FAILURE = re.compile(r"os error (\d+)|file write failed|iostream error", re.IGNORECASE)
# Below this many free bytes a file system counts as full: a library that writes through its own
# stream (torch.save, safetensors) reports ENOSPC as a RuntimeError or its own error type.
FULL_BELOW_BYTES = 64 << 10
_ADVICE = {
    errno.ENOSPC: "free space there or write somewhere else",
    errno.EDQUOT: "free space there or write somewhere else",
    errno.EROFS: "choose a directory on a writable file system",
    errno.EACCES: "choose a directory you may write to",
    errno.EPERM: "choose a directory you may write to",
}


def file_kind(path: str | os.PathLike[str]) -> str:
    return FILE_KINDS.get(Path(path).suffix.lower(), "a file")


def _reason(error: OSError) -> str:
    """The OS's words for the error ("no space left on device"), else the error's own message."""
    if error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def describe_os_error(error: OSError) -> str:
    """An OSError as one line: what failed, on which path, and what to do."""
    reason = _reason(error)
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    advice = _ADVICE.get(error.errno, "")
    return reason + (f": {paths}" if paths else "") + (f"; {advice}" if advice else "")


def write_failure(path: str | os.PathLike[str], error: OSError) -> FileSystemError:
    """`error`, met while writing `path`, as one line: what failed, on which file, and what to do."""
    reason = _reason(error)
    advice = _ADVICE.get(error.errno, "")
    return FileSystemError(
        f"{reason} writing {path} ({file_kind(path)})" + (f"; {advice}" if advice else ""),
        error.errno,
        str(path),
    )


def _file_in_the_way(directory: Path) -> Path | None:
    """The first of `directory` and its parents that exists but is not a directory."""
    for candidate in (directory, *directory.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = _file_in_the_way(path.parent)
        if blocker is not None:
            raise FileSystemError(
                f"cannot write {path} ({file_kind(path)}): {blocker} is a file, not a directory; move it "
                "away or point edgekd at another directory",
                errno.ENOTDIR,
                str(path),
            ) from e
        raise write_failure(path, e) from e


def _nearly_full(directory: Path) -> bool:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < FULL_BELOW_BYTES


@contextmanager
def write_failures_named(path: str | os.PathLike[str], scratch: str | os.PathLike[str]):
    """Around the code that writes `path` through `scratch` (a temporary file or directory beside
    it): an OSError on either, or any error of a writer that filled the disk (torch.save and
    safetensors report ENOSPC as their own error types), becomes a `FileSystemError` about `path`."""
    try:
        yield
    except Exception as e:
        if isinstance(e, EdgeKDError):
            raise
        if isinstance(e, OSError) and (
            e.filename is None or str(e.filename) == str(path) or str(e.filename).startswith(str(scratch))
        ):
            raise write_failure(path, e) from e
        if _nearly_full(Path(path).parent):
            raise write_failure(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from e
        said = WRITER_IO_FAILURE.search(str(e))
        if said is None:
            raise
        if said.group(1):
            raise write_failure(path, OSError(int(said.group(1)), os.strerror(int(said.group(1))))) from e
        raise FileSystemError(
            f"could not write {path} ({file_kind(path)}): {e}; check the free space and permissions there",
            errno.EIO,
            str(path),
        ) from e


@contextmanager
def atomic_path(path: str | os.PathLike[str]):
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed
    (and a failure to write it named as in `write_failures_named`)."""
    path = Path(path)
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_failure(path, e) from e
    os.close(fd)
    # mkstemp creates the file 0600; a published artifact gets the permissions open() would give it
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with write_failures_named(path, tmp):
            yield Path(tmp)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Let `writer` fill a temporary file, then move it into place."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def move_aside(path: str | os.PathLike[str], reason: str) -> Path:
    """Rename a damaged cache entry (file or folder) to `<name>.corrupt-<UTC time>` and warn, so the
    caller rebuilds it and the bad copy stays for a post-mortem instead of being trusted again."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, suffix = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
    while aside.exists():  # two entries found bad within the same second
        suffix += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{suffix}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process sharing the cache moved it first
        return aside
    log.warning("%s: %s; moved aside to %s and rebuilding it", path, reason, aside.name)
    return aside


def disk_full_error(
    path: str | os.PathLike[str], needed_bytes: int, elsewhere: str = "--cache-dir"
) -> EdgeKDError:
    """The one-line error for a full file system: its mount point, the file, how much to free and the
    option that puts the file on another disk."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    mount = existing.resolve()
    while not os.path.ismount(mount):
        mount = mount.parent
    short = max(1, -(-(needed_bytes - shutil.disk_usage(existing).free) // _MB))
    return DiskFullError(f"no space left on {mount} writing {path}: free {short} MB or pass {elsewhere}.")


@contextmanager
def full_disk_as_error(path: str | os.PathLike[str], needed_bytes: int = 0, elsewhere: str = "--cache-dir"):
    """Turn a write's ENOSPC/EDQUOT `OSError` inside the block into `disk_full_error(path, ...)`, also
    when a writer's cleanup raised another error over it (torch.save's zip writer does)."""
    try:
        yield
    except Exception as e:
        if not _out_of_space(e):
            raise
        raise disk_full_error(path, needed_bytes, elsewhere) from e


def _out_of_space(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            return True
        error = error.__cause__ or error.__context__
    return False


def reserve_space(fd: int, size: int, path: str | os.PathLike[str]) -> None:
    """Allocate the first `size` bytes of the open file `fd` now. A memory map of a sparse file gets
    its blocks when a page is first written, and on a full disk that write is a SIGBUS that kills
    the process; reserved up front, a full disk is a `DiskFullError` naming `path` here instead."""
    if size <= 0:
        return
    with full_disk_as_error(path, size):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            _write_zeros(fd, size)  # a file system without fallocate: allocate by writing


def _write_zeros(fd: int, size: int) -> None:
    """Extend the file to `size` bytes with written zeros; what it already holds is left alone."""
    block = bytes(_MB)
    for offset in range(os.fstat(fd).st_size, size, _MB):
        os.pwrite(fd, block[: size - offset], offset)
    os.fsync(fd)


def cached_json(
    path: Path, compute: Callable[[], T], to_json: Callable[[T], Any], from_json: Callable[[Any], T]
) -> T:
    """`compute()`'s value, kept as JSON at `path`: read back when the file exists, else computed and
    written atomically. A file that does not read back (cut short, hand-edited, an older layout) is
    moved aside and the value computed again."""
    if path.exists():
        try:
            return from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            why = " ".join(str(e).split())[:200]
            move_aside(path, f"cache entry cannot be read back ({type(e).__name__}: {why})")
    value = compute()
    with full_disk_as_error(path):
        write_json_atomic(path, to_json(value))
    return value


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (weights files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
