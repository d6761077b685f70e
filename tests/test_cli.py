import json
import subprocess
import sys

import pytest
import yaml

from edgekd.cli import main
from tests.conftest import REPO, SHARED_TEACHER_EPOCHS

EDGEKD = [sys.executable, "-m", "edgekd.cli"]


def test_import_and_help_load_no_torch():
    code = (
        "import sys, edgekd, edgekd.cli\n"
        "from edgekd.cli import main\n"
        "rc = main(['--help'])\n"
        "heavy = [m for m in ('torch', 'timm', 'litert_torch', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy, rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY [] 0" in out and "fit" in out


def test_targets_list_and_show(capsys):
    assert main(["targets", "list"]) == 0
    assert "pi5" in capsys.readouterr().out
    assert main(["targets", "show", "pi5"]) == 0
    out = capsys.readouterr().out
    assert "compute.clock_ghz" in out and "Cortex-A76" in out


def test_unknown_target_is_one_line_and_exit_2():
    result = subprocess.run([*EDGEKD, "fit", "--target", "pi55"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "error: Unknown target 'pi55'. Did you mean 'pi5'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_option_a_user_reaches_for_suggests_the_one_meant(capsys):
    assert main(["fit", "--out", "somewhere"]) == 2
    assert "No such option: --out (Possible options: --runs-dir)" in capsys.readouterr().err
    assert main(["fit", "--dataset=images"]) == 2
    assert "(Possible options: --data)" in capsys.readouterr().err
    # export has its own --out, and no --student: click's guess by spelling is left alone
    assert main(["export", "--model", "x"]) == 2
    assert "--student" not in capsys.readouterr().err


def test_bad_option_value_is_a_usage_error(capsys):
    assert main(["fit", "--epochs", "0"]) == 2
    assert "epochs must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_end_to_end_then_resume_and_reuse_teacher(tmp_path, session_cache):
    # The session's cache (no --cache-dir): the teacher test_devices_cli's fit trains too, trained
    # and timed once for both.
    args = [
        "fit",
        "--target",
        "pi5",
        "--student",
        "mobilenetv3_small_050",
        "--epochs",
        "2",
        "--teacher-epochs",
        str(SHARED_TEACHER_EPOCHS),
        "--loss",  # a feature loss end to end: taps, 1x1 adapters, and their checkpoint on resume
        "kd",
        "--loss",
        "fitnet:0.5",
        "--baseline",  # the same student without the teacher, for the report's comparison
        "scratch",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    first = subprocess.run(EDGEKD + args, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    for name in (
        "config.yaml",
        "search.csv",
        "student.safetensors",
        "metrics.csv",
        "profile.json",
        "result.json",
        "report.md",
        "report.html",
        "training-curves.png",
        "exports/student-fp32.tflite",
        "exports/student-fp32.tflite.json",
        # pi5 ships float TFLite: fit writes the Android bundle too.
        "exports/android/student-fp32.tflite",
        "exports/android/labels.txt",
        "exports/android/README.md",
    ):
        assert (run / name).exists(), name
    result = json.loads((run / "result.json").read_text())
    assert result["student"]["arch"] == "mobilenetv3_small_050"
    assert result["teacher"]["arch"] == "resnet18" and result["teacher"]["test_accuracy"] > 0.5
    assert result["export"]["parity"]["top1_agreement"] >= 0.995
    assert result["export"]["parity"]["samples"] == result["data"]["test"] == 269
    assert result["host_latency"]["median_ms"] > 0 and result["host_latency"]["runs"] >= 50
    assert result["student"]["predicted_latency_ms"] > 0
    # pi5's profile has no LiteRT rows: the prediction says it rests on the target file's priors
    assert result["student"]["predicted_by"].startswith("uncalibrated: profiles/pi5.csv has no litert")
    assert result["student"]["peak_memory_mb"] > 0
    assert len(result["history"]) == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["distillation"]["loss"] == ["kd", "fitnet:0.5"]
    report = (run / "report.md").read_text()
    assert "| accuracy (test, 269 images) |" in report and "uncalibrated" in report
    # the teacher, exported as the student's file was and timed here with the same threads
    teacher = result["teacher_latency"]
    assert (teacher["format"], teacher["precision"]) == ("tflite", "fp32") and teacher["latency"][
        "threads"
    ] == 1
    assert teacher["size_bytes"] > result["export"]["size_bytes"] and teacher["latency"]["median_ms"] > 0
    assert "| file (tflite fp32) |" in report and "faster |" in report
    # exported in a forked process beside the student's (fit_shipping.export_teacher_ahead), whose
    # scratch folder is gone: the teacher-latency cache holds the timing record alone
    assert {p.suffix for p in (session_cache / "teacher-latency").iterdir()} == {".json"}
    predictions = result["test_predictions"]
    assert len(predictions["true"]) == len(predictions["student"]) == len(predictions["teacher"]) == 269
    right = sum(t == s for t, s in zip(predictions["true"], predictions["student"], strict=True))
    assert right / 269 == pytest.approx(result["student"]["test_accuracy"], abs=1e-6)
    assert all((run / e["file"]).is_file() for e in predictions["examples"])
    assert "## Per class (test, 269 images)" in report and (run / "confusion-matrix.png").is_file()
    assert "data:image/png;base64," in (run / "report.html").read_text()
    baseline = result["baseline"]
    assert baseline == json.loads((run / "baseline.json").read_text()) and baseline["kind"] == "scratch"
    assert len(baseline["history"]) == 2 and 0 < baseline["test_accuracy"] <= 1
    assert all(m["val_teacher_agreement"] is None for m in baseline["history"])  # no teacher in its loss
    gain = 100 * (result["student"]["test_accuracy"] - baseline["test_accuracy"])
    assert f"{abs(gain):.2f} points" in report and "Without the teacher (--baseline scratch" in report
    assert f"distillation {gain:+.2f} points" in first.stderr  # the closing summary table
    # offline by default; fitnet reads the teacher's maps, so the teacher ran on every batch and no
    # cache of its logits was filled for this run (kd alone fills one: test_stage)
    assert result["student"]["scheme"] == "offline"
    assert "cached the teacher's outputs" not in (run / "edgekd.log").read_text()

    resumed = subprocess.run([*EDGEKD, "fit", "--resume", str(run)], capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "done in an earlier attempt" in resumed.stderr and "reusing cached teacher" in resumed.stderr
    assert "baseline: the student without the teacher epoch" not in resumed.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 1
    assert json.loads((run / "result.json").read_text())["teacher_latency"]["cached"]  # timed once

    # the run's student to two more formats, parity on the run's own validation images
    export_args = ["export", str(run), "--format", "onnx,coreml", "--precision", "fp32", "--no-latency"]
    exported = subprocess.run(
        [*EDGEKD, *export_args, "--cache-dir", str(session_cache)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    rows = json.loads((run / "exports" / "exports.json").read_text())["rows"]
    assert [(r["format"], r["status"]) for r in rows] == [
        ("pytorch", "reference"),
        ("onnx", "ok"),
        ("coreml", "exported, spec checked (cannot run here)"),
    ]
    assert rows[1]["top1_agreement"] >= 0.995 and (run / "exports" / "student-fp32.mlpackage").is_dir()
    # export kept the run's report current: its artifacts, fit's and export's, in one table
    report = (run / "report.md").read_text()
    assert "| `exports/student-fp32.tflite` | fit |" in report
    assert "| `exports/student-fp32.onnx` | edgekd export | onnx, fp32 | ok |" in report
    assert "checks on validation, 256 images" in report
    (run / "report.html").unlink()
    again = subprocess.run([*EDGEKD, "report", str(run)], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and (run / "report.html").is_file(), again.stderr[-3000:]


def test_several_targets_on_the_command_line_and_in_config_yaml(tmp_path, capsys):
    from edgekd.pipeline import FitConfig

    assert FitConfig.from_options(target=("pi5",)).target == "pi5" and FitConfig().targets == ("pi5",)
    assert FitConfig.from_options(target=["pi5", "pi4"]).targets == ("pi5", "pi4")
    (tmp_path / "config.yaml").write_text("target: [pi5, android-cpu]\nepochs: 1\n")
    assert FitConfig.from_yaml(tmp_path / "config.yaml").targets == ("pi5", "android-cpu")
    assert main(["fit", "--target", "pi5", "--target", "pi4", "--target", "pi5"]) == 2
    assert "pi5 named twice" in capsys.readouterr().err
    result = subprocess.run(
        [*EDGEKD, "fit", "--target", "pi5", "--target", "pi44"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2 and "Unknown target 'pi44'. Did you mean 'pi4'" in result.stderr


@pytest.mark.slow
def test_fit_under_torchrun_with_two_ranks_writes_one_run(tmp_path):
    """`torchrun -m edgekd fit`: both ranks train (gloo), rank 0 alone exports, measures and reports."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "edgekd", "fit", "--target", "pi5", "--student", "mobilenetv3_small_050",
        "--epochs", "1", "--teacher-epochs", "1", "--batch-size", "32",
        "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    result = json.loads((run / "result.json").read_text())
    assert result["export"]["parity"]["top1_agreement"] >= 0.995 and len(result["history"]) == 1
    assert "rank 1 of 2 joined the gloo process group" in done.stderr
    assert done.stderr.count("host latency") == 1  # one summary, from rank 0
