"""Bad, hostile and mistaken input to the `edgekd` command: each case asserts the exit code, a one-line
message naming what is wrong, and no traceback.

Every case runs the CLI in-process (`edgekd.cli.main`), so the suite pays for torch's import once. A
case's `argv` is a list, or a function of a fresh temporary directory that builds the files the case
needs and returns the list. The cases are grouped by the part of edgekd they exercise; a new bad input
is one more row.
"""

from __future__ import annotations

import os
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
    Case(
        "unknown loss", ["fit", "--loss", "bogus"], 2, r"Unknown KD loss 'bogus'\. Valid: at, ce, dist, dkd"
    ),
    Case("loss weight not a number", ["fit", "--loss", "kd:abc"], 2, r"the weight 'abc' is not a number"),
    Case("unknown scheme", ["fit", "--scheme", "bogus"], 2, r"unknown scheme 'bogus'.*offline"),
    Case("bad search budget", ["fit", "--search-budget", "7x"], 2, r"search budget '7x' is neither"),
    Case(
        "unknown objective",
        ["fit", "--objective", "fastest"],
        2,
        r"unknown objective 'fastest' \(--objective\); choose retention .* Valid: accuracy, latency",
    ),
    Case("objective misspelt in config", _config("objective: acuracy\n"), 2, r"Did you mean 'accuracy'"),
    Case(
        "min retention zero",
        ["fit", "--min-retention", "0"],
        2,
        r"--min-retention\) .* in \(0, 1\].*got 0\.0",
    ),
    Case(
        "min retention above one",
        ["fit", "--min-retention", "1.5"],
        2,
        r"in \(0, 1\] such as 0\.97; got 1\.5",
    ),
    Case("min retention nan", ["fit", "--min-retention", "nan"], 2, r"in \(0, 1\].*got nan"),
    Case(
        "min retention not a number",
        ["fit", "--min-retention", "most"],
        2,
        r"Invalid value for '--min-retention'",
    ),
    Case("teacher weights without teacher", ["fit", "--teacher-weights", "w.pth"], 2, r"needs teacher"),
    Case(
        "unknown teacher",
        ["fit", "--teacher", "nosuchnet_xyz"],
        2,
        r"'nosuchnet_xyz' is neither a file nor a timm model",
    ),
    Case(
        "missing teacher file",
        ["fit", "--teacher", "missing.safetensors"],
        2,
        r"missing.safetensors: no such file",
    ),
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
def _profile(name: str, content: bytes | None, *options: str, companion: str | None = None):
    """argv of `edgekd profile` on a file `name` holding `content` (None: no such file)."""

    def argv(tmp_path: Path) -> list[str]:
        path = tmp_path / name
        if content is not None:
            _write(path, content)
        if companion is not None:
            _write(tmp_path / companion, b"\0" * 16)
        return ["profile", str(path), *options]

    return argv


def _devices_yaml(text: str, *command: str):
    """argv of `edgekd <command>` with this devices.yaml in a config directory of the case's own (the
    autouse fixture's monkeypatch restores EDGEKD_CONFIG_DIR after the test)."""

    def argv(tmp_path: Path) -> list[str]:
        os.environ["EDGEKD_CONFIG_DIR"] = str(tmp_path / "config")
        _write(tmp_path / "config" / "devices.yaml", text)
        return list(command)

    return argv


DEVICE_CASES: list[Case] = [
    Case("profile garbage tflite", _profile("m.tflite", b"garbage!"), 2,
         r"m\.tflite \(TFLite\): \w+ cannot load or run it \(.+\); export it again"),
    Case("profile empty tflite", _profile("m.tflite", b""), 2, r"m\.tflite \(TFLite\): \w+ cannot load"),
    Case("profile garbage onnx", _profile("m.onnx", b"garbage!"), 2,
         r"m\.onnx \(ONNX\): onnxruntime cannot load or run it \(.*INVALID_PROTOBUF"),
    Case("profile garbage openvino", _profile("m.xml", b"<net/>", companion="m.bin"), 2,
         r"m\.xml \(OpenVINO IR\): openvino cannot load or run it \(Unable to read the model"),
    Case("profile xml without its bin", _profile("m.xml", b"<net/>"), 2,
         r"m\.xml: m\.bin is missing; the OpenVINO IR format keeps part of the model there"),
    Case("profile unknown suffix", _profile("m.txt", b"x"), 2,
         r"m\.txt: not an artifact .*suffix '\.txt'\); known: \.tflite, \.xml, \.onnx, \.mlpackage"),
    Case("profile missing artifact", _profile("absent.tflite", None), 2, r"absent\.tflite: no such artifact"),
    Case("profile a directory", lambda t: ["profile", str((t / "d.tflite").mkdir() or t / "d.tflite")], 2,
         r"d\.tflite: a TFLite model is a file, and this is a directory"),
    # the options are refused before the artifact is looked at: the file does not exist
    Case("profile zero threads", _profile("absent.tflite", None, "--threads", "0"), 2,
         r"--threads 0: must be a whole number of at least 1"),
    Case("profile zero runs", _profile("absent.tflite", None, "--runs", "0"), 2,
         r"--runs 0: must be a whole number of at least 1"),
    Case("profile negative warmup", _profile("absent.tflite", None, "--warmup", "-1"), 2, r"--warmup -1"),
    Case("profile negative min seconds", _profile("absent.tflite", None, "--min-seconds", "-1"), 2,
         r"--min-seconds -1: must be 0 or more seconds"),
    Case("profile zero timeout", _profile("absent.tflite", None, "--timeout", "0"), 2,
         r"--timeout 0: must be more than 0 seconds"),
    Case("profile unknown compute units", _profile("absent.tflite", None, "--compute-units", "NPU"), 2,
         r"--compute-units 'NPU': valid are ALL, CPU_AND_NE, CPU_ONLY, CPU_AND_GPU"),
    Case("profile force without record", _profile("m.tflite", b"x", "--force"), 2,
         r"--force applies to --record only"),
    Case("record this host as a pi5", _profile("m.tflite", b"x", "--record", "--target", "pi5"), 2,
         r"--record --target pi5: local is this machine \(the host target\), not a pi5.*--force"),
    Case("record an unregistered ssh device",
         _profile("m.tflite", b"x", "--device", "ssh://pi@pi5.local", "--record", "--target", "pi5"), 2,
         r"ssh://pi@pi5\.local is not registered as a pi5 \(edgekd devices add NAME .* --target pi5\)"),
    Case("ssh host like an option", _profile("m.tflite", b"x", "--device", "ssh://-oProxyCommand=touch${IFS}x"),
         2, r"the host '-oproxycommand=touch\$\{ifs\}x' begins with '-'"),
    Case("ssh user like an option",
         _profile("m.tflite", b"x", "--device", "ssh://-oProxyCommand=touch${IFS}x@127.0.0.1"), 2,
         r"the user '-oProxyCommand=touch\$\{IFS\}x' begins with '-'"),
    Case("ssh host with a space", _profile("m.tflite", b"x", "--device", "ssh://-oProxyCommand=touch x"), 2,
         r"a device URI has no spaces or control characters"),
    Case("ssh host with a newline", _profile("m.tflite", b"x", "--device", "ssh://pi@host\n-oX=y"), 2,
         r"a device URI has no spaces or control characters"),
    Case("ssh empty user", _profile("m.tflite", b"x", "--device", "ssh://@pi.local"), 2,
         r"the user is empty"),
    Case("ssh broken ipv6", _profile("m.tflite", b"x", "--device", "ssh://[::1"), 2,
         r"'ssh://\[::1': not a valid URI \(Invalid IPv6 URL\)"),
    Case("ssh password", _profile("m.tflite", b"x", "--device", "ssh://pi:hunter2@pi.local"), 2,
         r"'ssh://pi:\*\*\*@pi\.local': edgekd takes no password .* ssh-copy-id pi@pi\.local"),
    Case("adb serial like an option", _profile("m.tflite", b"x", "--device", "adb://-H"), 2,
         r"the serial '-H' begins with '-'"),
    Case("adb with core ml compute units",
         _profile("m.tflite", b"x", "--device", "adb://R58", "--compute-units", "CPU_ONLY"), 2,
         r"adb://R58: --compute-units CPU_ONLY is Core ML's"),
    Case("devices add with a password", ["devices", "add", "pi", "ssh://pi:hunter2@pi.local"], 2,
         r"edgekd takes no password in a device URI"),
    Case("devices add local as a pi5", ["devices", "add", "here", "local", "--target", "pi5"], 2,
         r"local is this machine, whose target is host, not pi5"),
    Case("devices add unknown target", ["devices", "add", "pi", "ssh://pi@pi.local", "--target", "pi55"], 2,
         r"Unknown target 'pi55'"),
    Case("devices.yaml a list", _devices_yaml("- pi\n", "devices", "list"), 2,
         r"devices\.yaml: holds \['pi'\], not a mapping of 'devices' alone; expected devices: \{NAME:"),
    Case("devices.yaml devices a number", _devices_yaml("devices: 5\n", "devices", "list"), 2,
         r"devices\.yaml: 'devices' is 5, not a mapping of names"),
    Case("devices.yaml unknown key",
         _devices_yaml("devices:\n  pi: {uri: local, passwd: x}\n", "devices", "list"), 2,
         r"device 'pi' has unknown key\(s\) passwd; valid: uri, python, ssh_config, benchmark_model, target"),
    Case("devices.yaml entry not a mapping",
         _devices_yaml("devices:\n  pi: ssh://pi@pi\n", "devices", "list"), 2,
         r"device 'pi' is not a mapping of its settings"),
    Case("devices.yaml not yaml", _devices_yaml("devices: {pi: [\n", "devices", "check", "pi"), 2,
         r"devices\.yaml: not valid YAML \(line \d+\)"),
    Case("devices.yaml with a password",
         _devices_yaml("devices:\n  pi: {uri: 'ssh://pi:hunter2@pi.local'}\n", "devices", "check", "pi"), 2,
         r"device 'pi' has a password in its URI \(ssh://pi:\*\*\*@pi\.local\)"),
    Case("devices.yaml host like an option",
         _devices_yaml("devices:\n  pi: {uri: 'ssh://-oProxyCommand=touch${IFS}x'}\n", "devices", "check",
                       "pi"), 2, r"the host '-oproxycommand=touch\$\{ifs\}x' begins with '-'"),
    Case("calibrate zero threads", ["latency", "calibrate", "--target", "pi5", "--threads", "0"], 2,
         r"--threads 0: profile rows are of 1 thread or more"),
]  # fmt: skip


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
    from edgekd.preprocessing import Preprocessing

    teacher = tmp_path / "teacher.safetensors"
    classes = tuple(str(digit) for digit in range(10))
    info = ModelInfo("test_efficientnet", Preprocessing(32, IMAGENET_MEAN, IMAGENET_STD, classes))
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
def _run_dir(tmp_path: Path, **settings) -> Path:
    """A run directory as `fit` starts one: only its config.yaml, which is all --resume reads first."""
    import yaml

    from edgekd._config import to_mapping
    from edgekd.pipeline import FitConfig

    run = tmp_path / "earlier" / "20260101-000000-pi5"
    _write(
        run / "config.yaml", yaml.safe_dump(to_mapping(FitConfig.from_options(**settings)), sort_keys=False)
    )
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
    Case("ema decay 1", ["fit", "--ema-decay", "1"], 2, r"ema_decay .* at least 0 and below 1"),
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
        "alpha with no kd term",
        ["fit", "--loss", "ce", "--loss", "dist", "--alpha", "0.5"],
        2,
        r"--alpha 0\.5 weighs the kd term, and --loss ce dist has none",
    ),
    Case("baseline unknown", ["fit", "--baseline", "none"], 2, r"unknown baseline 'none' \(--baseline\)"),
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
    Case(
        "time budget 0",
        ["fit", "--time-budget", "0"],
        2,
        r"^error: --time-budget '0' is not a duration: .*90s",
    ),
    Case(
        "time budget not a duration",
        ["fit", "--time-budget", "abc"],
        2,
        r"--time-budget 'abc' is not a duration",
    ),
    Case(
        "time budget negative", ["fit", "--time-budget", "-5m"], 2, r"--time-budget '-5m' is not a duration"
    ),
    Case(
        "time budget without unit", ["fit", "--time-budget", "300"], 2, r"'300' is not a duration: .*a unit"
    ),
    Case("time budget in config", _config("time_budget: 0s\n"), 2, r"--time-budget '0s' is not a duration"),
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
