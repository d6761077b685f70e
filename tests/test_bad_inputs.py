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
class _RunsCode:
    """Unpickled, this runs `touch MARKER`: what a crafted checkpoint could run instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        import shlex

        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _run_with_code_checkpoint(tmp_path: Path) -> list[str]:
    """A run directory (digits, a tiny teacher checkpoint, one student, no search trials) interrupted
    in distillation, whose student checkpoint is a pickle that would create tmp_path/MARKER."""
    import timm
    import torch

    from edgekd.checkpoint import ModelInfo, save_model
    from edgekd.data import IMAGENET_MEAN, IMAGENET_STD

    teacher = tmp_path / "teacher.safetensors"
    classes = tuple(str(digit) for digit in range(10))
    info = ModelInfo("test_efficientnet", classes, 32, IMAGENET_MEAN, IMAGENET_STD)
    save_model(teacher, timm.create_model("test_efficientnet", num_classes=10), info)
    run = tmp_path / "interrupted-run"
    _write(
        run / "config.yaml",
        f"target: pi5\nteacher: {teacher}\nstudent: mobilenetv3_small_050\nepochs: 1\nsearch_budget: '0'\n"
        f"teacher_cache: false\naugment_draws: 0\ncache_dir: {tmp_path / 'cache'}\n",
    )
    (run / "checkpoints" / "student").mkdir(parents=True)
    torch.save({"model": _RunsCode(tmp_path / "MARKER")}, run / "checkpoints" / "student" / "last.pt")
    return ["fit", "--resume", str(run)]


CHECKPOINT_CASES = [
    Case(
        "resume from a checkpoint that would run code",
        _run_with_code_checkpoint,
        2,
        r"^error: .*interrupted-run/checkpoints/student/last\.pt: cannot be resumed from: it holds "
        r"pickled Python objects besides tensors and numbers.*it was not unpickled\. Delete it",
    ),
]


# --- runs, data, export and resume --------------------------------------------------------------
RUN_CASES: list[Case] = []


# --- the error path: interrupts, file system errors ---------------------------------------------
ERROR_PATH_CASES: list[Case] = []


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
