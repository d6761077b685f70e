"""Bad, hostile and mistaken input to the `edgekd` command: each case asserts the exit code, a one-line
message naming what is wrong, and no traceback.

Every case runs the CLI in-process (`edgekd.cli.main`), so the suite pays for torch's import once. A
case's `argv` is a list, or a function of a fresh temporary directory that builds the files the case
needs and returns the list. The cases are grouped by the part of edgekd they exercise; a new bad input
is one more row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekd.cli import main


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str] | Callable[[Path], list[str]]
    code: int
    message: str  # a regex that one line of the output must match

    def args(self, tmp_path: Path) -> list[str]:
        return self.argv(tmp_path) if callable(self.argv) else list(self.argv)


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# --- options and names --------------------------------------------------------------------------
OPTION_CASES = [
    Case("unknown target", ["fit", "--target", "pi55"], 2, r"Unknown target 'pi55'\. Did you mean 'pi5'"),
    Case("zero epochs", ["fit", "--epochs", "0"], 2, r"epochs must be at least 1"),
]


# --- devices, ssh and profiling -----------------------------------------------------------------
DEVICE_CASES: list[Case] = []


# --- checkpoints and caches ---------------------------------------------------------------------
CHECKPOINT_CASES: list[Case] = []


# --- runs, data, export and resume --------------------------------------------------------------
RUN_CASES: list[Case] = []


# --- the error path: interrupts, file system errors ---------------------------------------------
def _runs_dir_on_a_read_only_mount(tmp: Path) -> list[str]:
    from tests.tmpfs import read_only_dir

    return ["fit", "--target", "pi5", "--runs-dir", str(read_only_dir(tmp / "read-only") / "runs")]


def _config_dir_that_is_a_file(tmp: Path) -> list[str]:
    import os

    # conftest's autouse fixture set this through monkeypatch, which restores it after the test
    os.environ["EDGEKD_CONFIG_DIR"] = str(_write(tmp / "config-file", "not a directory\n"))
    return ["devices", "add", "desk", "local"]


ERROR_PATH_CASES = [
    Case(
        "runs dir on a read-only file system",
        _runs_dir_on_a_read_only_mount,
        1,
        r"^error: read-only file system: \S+/read-only/runs; choose a directory on a writable file system",
    ),
    Case(
        "config dir is a file",
        _config_dir_that_is_a_file,
        1,
        r"^error: cannot write \S+/config-file/devices\.yaml \(a YAML file\): \S+/config-file is a file, "
        r"not a directory",
    ),
]


ALL_CASES = [*OPTION_CASES, *DEVICE_CASES, *CHECKPOINT_CASES, *RUN_CASES, *ERROR_PATH_CASES]


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_bad_input_is_one_line_error_without_traceback(case: Case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a case that would create runs/ creates it here, where we look
    code = main(case.args(tmp_path))
    out, err = capsys.readouterr()
    both = out + err
    assert code == case.code, both
    assert "Traceback" not in both
    assert any(re.search(case.message, line) for line in both.splitlines()), both
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "orphan run dir"


def test_cases_have_unique_ids():
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids))
