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
def _run_dir(tmp_path: Path, **settings) -> Path:
    """A run directory as `fit` starts one: only its config.yaml, which is all --resume reads first."""
    import yaml

    from edgekd._config import to_mapping
    from edgekd.pipeline import FitConfig

    run = tmp_path / "earlier" / "20260101-000000-pi5"
    _write(run / "config.yaml", yaml.safe_dump(to_mapping(FitConfig(**settings)), sort_keys=False))
    return run


def _png(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path


def _one_class_folder(tmp_path: Path) -> Path:
    for i in range(3):
        _png(tmp_path / "cats" / "train" / "tabby" / f"{i}.png")
    return tmp_path / "cats"


RUN_CASES: list[Case] = [
    Case(
        "input size 0",
        ["fit", "--input-size", "0"],
        2,
        r"input_size \(--input-size\) must be between 8 and 1024",
    ),
    Case("input size negative", ["fit", "--input-size", "-5"], 2, r"between 8 and 1024 pixels, got -5"),
    Case("input size huge", ["fit", "--input-size", "100000"], 2, r"between 8 and 1024 pixels, got 100000"),
    Case("lr nan", ["fit", "--lr", "nan"], 2, r"lr \(--lr\) must be a finite number above 0.*got nan"),
    Case("lr negative", ["fit", "--lr", "-0.1"], 2, r"lr \(--lr\) must be a finite number above 0"),
    Case("weight decay negative", ["fit", "--weight-decay", "-1e-4"], 2, r"weight_decay .* 0 or more"),
    Case(
        "optimizer misspelt",
        ["fit", "--optimizer", "adamm"],
        2,
        r"unknown optimizer 'adamm'.*Did you mean 'adamw'",
    ),
    Case(
        "schedule bogus",
        ["fit", "--schedule", "bogus"],
        2,
        r"unknown schedule 'bogus'.*Valid: cosine, onecycle",
    ),
    Case(
        "temperature 0", ["fit", "--temperature", "0"], 2, r"temperature \(--temperature\) must be .* above 0"
    ),
    Case(
        "alpha above 1", ["fit", "--alpha", "1.5"], 2, r"alpha \(--alpha\) must be between 0 and 1, got 1\.5"
    ),
    Case(
        "label smoothing negative",
        ["fit", "--label-smoothing", "-0.1"],
        2,
        r"label_smoothing .* between 0 and 1",
    ),
    Case("ema decay 1", ["fit", "--ema-decay", "1"], 2, r"ema_decay .* between 0 and 1, both excluded"),
    Case("clip norm 0", ["fit", "--clip-grad-norm", "0"], 2, r"clip_grad_norm .* above 0"),
    Case("teacher epochs 0", ["fit", "--teacher-epochs", "0"], 2, r"teacher_epochs must be at least 1"),
    Case(
        "qat epochs negative",
        ["fit", "--qat-epochs", "-1"],
        2,
        r"qat_epochs \(--qat-epochs\) must be 0 or more",
    ),
    Case(
        "bad value in config.yaml",
        lambda tmp: ["fit", "--config", str(_write(tmp / "c.yaml", "lr: .nan\n"))],
        2,
        r"c\.yaml: lr \(--lr\) must be a finite number",
    ),
    Case(
        "runs dir is a file",
        lambda tmp: ["fit", "--runs-dir", str(_write(tmp / "f", "x"))],
        2,
        r"runs_dir \(--runs-dir\) .*/f is a file; give a directory",
    ),
    Case(
        "cache dir is a file",
        lambda tmp: ["fit", "--cache-dir", str(_write(tmp / "f", "x"))],
        2,
        r"cache_dir \(--cache-dir\) .*/f is a file",
    ),
    Case(
        "runs dir under a file",
        lambda tmp: ["fit", "--runs-dir", str(_write(tmp / "f", "x") / "runs")],
        2,
        r"/f/runs lies under .*/f, which is a file",
    ),
    Case("device misspelt", ["fit", "--device", "loacl"], 2, r"no device named 'loacl'"),
    Case("device uri malformed", ["fit", "--device", "ssh://"], 2, r"'ssh://' is not an SSH device"),
    Case("student unknown", ["fit", "--student", "resnet9000"], 2, r"resnet9000"),
    Case("assistant without its scheme", ["fit", "--assistant", "lcnet_050"], 2, r"needs --scheme assistant"),
    Case(
        "teacher misspelt",
        ["fit", "--teacher", "resnet1B"],
        2,
        r"'resnet1B' is neither a file nor a timm model",
    ),
    Case("teacher file missing", ["fit", "--teacher", "gone.onnx"], 2, r"--teacher gone\.onnx: no such file"),
    Case(
        "teacher weights missing",
        ["fit", "--teacher", "resnet18", "--teacher-weights", "gone.pth"],
        2,
        r"--teacher-weights gone\.pth: no such file",
    ),
    Case(
        "assistant misspelt",
        ["fit", "--scheme", "assistant", "--assistant", "lcnet_05"],
        2,
        r"--assistant 'lcnet_05' is not a timm model\. Did you mean .*'lcnet_050'",
    ),
    Case(
        "one class of images",
        lambda tmp: ["fit", "--data", str(_one_class_folder(tmp))],
        2,
        r"cats/train: one class folder \('tabby'\); a classifier needs at least two",
    ),
    Case(
        "data folder missing",
        ["fit", "--data", "no-such-folder"],
        2,
        r"no-such-folder: data directory does not exist",
    ),
    Case(
        "resume changes training",
        lambda tmp: [
            "fit",
            "--resume",
            str(_run_dir(tmp, epochs=2)),
            "--epochs",
            "5",
            "--target",
            "android-cpu",
            "--student",
            "lcnet_050",
        ],
        2,
        r"--resume keeps the run's training settings; drop --target, --student or --epochs or start a new",
    ),
    Case(
        "resume with a bad safe option",
        lambda tmp: ["fit", "--resume", str(_run_dir(tmp)), "--threads", "0"],
        2,
        r"threads must be at least 1",
    ),
    Case(
        "resume with config",
        lambda tmp: ["fit", "--resume", str(_run_dir(tmp)), "--config", "c.yaml"],
        2,
        r"reads the run's own config\.yaml; drop --config",
    ),
    Case("resume of no run", lambda tmp: ["fit", "--resume", str(tmp)], 2, r"not an edgekd run directory"),
    Case(
        "export precision int4",
        lambda tmp: ["export", str(tmp), "--precision", "int4"],
        2,
        r"--precision int4: no such precision \(valid: fp32, fp16, int8\).*tflite int8",
    ),
    Case(
        "export pair that no format has",
        lambda tmp: ["export", str(tmp), "--format", "onnx", "--precision", "int8"],
        2,
        r"none of the requested exports exists \(onnx int8\); valid: onnx fp32",
    ),
    Case(
        "export parity images 0",
        lambda tmp: ["export", str(tmp), "--parity-images", "0"],
        2,
        r"Invalid value for '--parity-images'",
    ),
    Case(
        "export calibration images 0",
        lambda tmp: ["export", str(tmp), "--calibration-images", "0"],
        2,
        r"Invalid value for '--calibration-images'",
    ),
    Case(
        "export cache dir is a file",
        lambda tmp: ["export", str(tmp), "--cache-dir", str(_write(tmp / "f", "x"))],
        2,
        r"--cache-dir .*/f is a file; give a directory",
    ),
    Case(
        "export threads 0",
        lambda tmp: ["export", str(tmp), "--threads", "0"],
        2,
        r"Invalid value for '--threads'",
    ),
]


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
