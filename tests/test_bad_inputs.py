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
def _config(text: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["fit", "--config", str(_write(tmp / "fit.yaml", text))]


def _with_file(name: str, content: str | bytes, *argv: str) -> Callable[[Path], list[str]]:
    """argv with `{file}` and `{dir}` replaced by a file written first and its folder."""

    def build(tmp: Path) -> list[str]:
        path = _write(tmp / name, content)
        return [a.replace("{file}", str(path)).replace("{dir}", str(path.parent)) for a in argv]

    return build


OPTION_CASES = [
    Case("unknown target", ["fit", "--target", "pi55"], 2, r"Unknown target 'pi55'\. Did you mean 'pi5'"),
    Case("target named twice", ["fit", "--target", "pi5", "--target", "pi5"], 2, r"pi5 named twice"),
    Case("zero epochs", ["fit", "--epochs", "0"], 2, r"epochs must be at least 1"),
    Case("epochs not a number", ["fit", "--epochs", "abc"], 2, r"Invalid value for '--epochs'"),
    Case("unknown option", ["fit", "--bogus-option"], 2, r"No such option: --bogus-option"),
    Case("unknown loss", ["fit", "--loss", "bogus"], 2, r"Unknown KD loss 'bogus'\. Valid: at, ce, dkd"),
    Case("loss weight not a number", ["fit", "--loss", "kd:abc"], 2, r"the weight 'abc' is not a number"),
    Case("unknown scheme", ["fit", "--scheme", "bogus"], 2, r"unknown scheme 'bogus'.*offline"),
    Case("bad search budget", ["fit", "--search-budget", "7x"], 2, r"search budget '7x' is neither"),
    Case("teacher weights without teacher", ["fit", "--teacher-weights", "w.pth"], 2, r"needs teacher"),
    Case("unknown teacher", ["fit", "--teacher", "nosuchnet_xyz"], 2, r"'nosuchnet_xyz' is not a timm model"),
    Case("missing teacher file", ["fit", "--teacher", "missing.safetensors"], 2, r"does not exist"),
    Case("unknown student", ["fit", "--student", "nosuchnet"], 2, r"Unknown student 'nosuchnet'"),
    Case("qat for a float target", ["fit", "--qat-epochs", "3"], 2, r"pi5 ships fp32; drop --qat-epochs"),
    Case("missing data folder", ["fit", "--data", "nowhere"], 2, r"nowhere: data directory does not exist"),
    Case("data is a file", _with_file("x.txt", "x", "fit", "--data", "{file}"), 2, r"x\.txt"),
    Case(
        "data without classes",
        lambda tmp: ["fit", "--data", str((tmp / "d" / "train").mkdir(parents=True) or tmp / "d")],
        2,
        r"no class subfolders",
    ),
    Case("missing config", ["fit", "--config", "nowhere.yaml"], 2, r"nowhere\.yaml: cannot be read"),
    Case(
        "yaml python tag never runs",
        _config('epochs: !!python/object/apply:os.system ["touch PWNED"]\n'),
        2,
        r"fit\.yaml: not valid YAML",
    ),
    Case("config key misspelt", _config("epoch: 3\n"), 2, r"unknown field 'epoch'\. Did you mean 'epochs'"),
    Case("config not a mapping", _config("- a\n- b\n"), 2, r"top level must be a mapping"),
    Case("config broken yaml", _config("epochs: [1\n"), 2, r"fit\.yaml"),
    Case("config wrong type", _config("epochs: many\n"), 2, r"epochs"),
    Case("targets show unknown", ["targets", "show", "pi55"], 2, r"Unknown target 'pi55'"),
    Case(
        "own target with unknown field",
        _with_file(
            "td/mine.yaml", "name: mine\nbase: pi5\n", "targets", "show", "mine", "--targets-dir", "{dir}"
        ),
        2,
        r"unknown field 'base'",
    ),
    Case("search unknown target", ["search", "--target", "pi55"], 2, r"Unknown target 'pi55'"),
    Case(
        "predict unknown model",
        ["latency", "predict", "nosuchnet", "--target", "pi5"],
        2,
        r"not a timm model",
    ),
    Case("export missing run", ["export", "nowhere"], 2, r"nowhere: no such run directory"),
    Case("export unknown format", ["export", ".", "--format", "tflitex"], 2, r"Did you mean 'tflite'"),
    Case("device unknown scheme", ["devices", "add", "x", "ftp://host"], 2, r"ftp://host"),
    Case("device unknown name", ["devices", "check", "nosuch"], 2, r"no device named 'nosuch'"),
    Case("device remove unknown", ["devices", "remove", "nosuch"], 2, r"no device named 'nosuch'"),
]


# --- devices, ssh and profiling -----------------------------------------------------------------
DEVICE_CASES: list[Case] = []


# --- checkpoints and caches ---------------------------------------------------------------------
CHECKPOINT_CASES: list[Case] = []


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
