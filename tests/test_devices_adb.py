"""ADB profiling. No Android phone exists on this machine and no benchmark_model binary for one, so
these tests check what can be checked without them: the command line edgekd builds, the parser on
logs in the layout benchmark_model prints (tests/data/benchmark_model: an older version's, with the
memory delta line, a newer one's, with median/p95 and the periodic peak-memory line, and one with
--enable_op_profiling's per-op table; written for these tests, not captured from a device), and the
push / run / clean-up sequence against a stand-in `adb` script that replays such a log. A real phone
replaces the stand-in, nothing else."""

import os
import shlex
import textwrap
from pathlib import Path

import pytest

from edgekd.devices import ProfileSettings
from edgekd.devices.adb import ADBDevice, parse_benchmark_model
from edgekd.errors import ConfigError, DeviceError

LOGS = Path(__file__).parent / "data" / "benchmark_model"


def test_the_older_log_gives_the_timed_runs_not_the_warmup():
    result = parse_benchmark_model((LOGS / "older.txt").read_text())
    assert result.runs == 128  # the second count= line; the first (61 runs) is the warm-up
    assert result.avg_ms == pytest.approx(7.8112) and result.std_ms == pytest.approx(0.337)
    assert (result.min_ms, result.max_ms) == (pytest.approx(7.489), pytest.approx(9.954))
    assert result.median_ms is None and result.p95_ms is None  # that version prints neither
    assert result.init_ms == pytest.approx(21.406) and result.first_inference_ms == pytest.approx(13.521)
    assert result.warmup_avg_ms == pytest.approx(8.19054)
    assert result.memory_mb == pytest.approx(17.3125)  # overall delta: the only figure it has


def test_the_newer_log_has_a_median_and_the_periodic_peak_memory():
    result = parse_benchmark_model((LOGS / "newer.txt").read_text())
    assert (
        result.runs == 196
        and result.median_ms == pytest.approx(5.069)
        and result.p95_ms == pytest.approx(5.254)
    )
    assert result.memory_mb == pytest.approx(10.2109)  # the periodic peak wins over the delta line


def test_op_profiling_gives_the_per_layer_table_slowest_first():
    result = parse_benchmark_model((LOGS / "op-profiling.txt").read_text())
    assert [row["type"] for row in result.layers] == [
        "TfLiteXNNPackDelegate",
        "MEAN",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ]
    assert result.layers[1] == {"layer": "[head/global_pool/mean]:31", "type": "MEAN", "ms": 0.598}
    assert parse_benchmark_model((LOGS / "older.txt").read_text()).layers == ()


def test_scientific_notation_and_a_log_without_a_summary():
    log = "count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798\n" + (
        "Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, "
        "Inference (avg): 2.95034e+06"
    )
    assert parse_benchmark_model(log).avg_ms == pytest.approx(2950.34)
    with pytest.raises(
        DeviceError, match=r"no timing summary; its last lines: STARTING! \| ERROR: Could not open"
    ):
        parse_benchmark_model("STARTING!\nERROR: Could not open '/data/local/tmp/x.tflite'.")


def test_the_command_line_carries_threads_runs_and_delegates():
    device = ADBDevice.from_uri("adb://R58M123ABC", benchmark_model="/data/local/tmp/bm")
    command = device.benchmark_command(
        "/data/local/tmp/d/m.tflite", threads=4, runs=100, warmup=5, min_seconds=2, xnnpack=False, gpu=True
    )
    assert command[:4] == ["adb", "-s", "R58M123ABC", "shell"]
    shell = shlex.split(command[4])
    assert shell[0] == "/data/local/tmp/bm"
    assert {
        "--graph=/data/local/tmp/d/m.tflite",
        "--num_threads=4",
        "--num_runs=100",
        "--warmup_runs=5",
        "--min_secs=2",
        "--use_xnnpack=false",
        "--use_gpu=true",
        "--enable_op_profiling=true",
    } <= set(shell[1:])
    for bad in ("adb://", "ssh://R58"):
        with pytest.raises(ConfigError):
            ADBDevice.from_uri(bad)


def fake_adb(tmp_path: Path, log_file: Path, benchmark_exit: int = 0) -> Path:
    """A stand-in for `adb` (no phone here): records every call, replays a benchmark_model log."""
    calls = tmp_path / "calls.txt"
    script = tmp_path / "adb"
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {calls}
        case "$3" in get-state) echo device; exit 0 ;; esac
        case "$4" in
          ls\\ *) echo "$5" ;;
          *benchmark_model*) cat {log_file}; exit {benchmark_exit} ;;
          getprop\\ ro.product.model) echo "Pixel 7" ;;
        esac
        exit 0
        """)
    )
    script.chmod(0o755)
    return script


def test_profile_pushes_runs_parses_and_removes_its_directory(tmp_path):
    model = tmp_path / "student-int8.tflite"
    model.write_bytes(b"TFL3")
    adb = fake_adb(tmp_path, LOGS / "newer.txt")
    measured = ADBDevice("R58M123ABC", adb=str(adb)).profile(model, ProfileSettings(threads=1, runs=50))
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    mkdir, push, run = calls[0], calls[1], calls[2]
    remote_dir = mkdir.split()[-1]
    assert mkdir.startswith("-s R58M123ABC shell mkdir -p /data/local/tmp/edgekd-bench.")
    assert push == f"-s R58M123ABC push {model} {remote_dir}/student-int8.tflite"
    assert f"--graph={remote_dir}/student-int8.tflite" in run and "--num_threads=1" in run
    assert f"shell rm -rf {remote_dir}" in calls[3]
    assert measured.latency.median_ms == pytest.approx(5.069) and measured.statistic == "median"
    assert measured.latency.mean_ms == pytest.approx(5.09166) and measured.latency.runs == 196
    assert measured.latency.cold_start_ms == pytest.approx(11.94 + 6.21)
    assert measured.memory_mb == pytest.approx(10.2109) and measured.fingerprint["model"] == "Pixel 7"
    assert measured.extra["std_ms"] == pytest.approx(0.103)


def test_a_failed_benchmark_still_removes_the_directory(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    broken = tmp_path / "broken.txt"
    broken.write_text("ERROR: Didn't find op for builtin opcode 'HARD_SWISH' version '1'\n")
    adb = fake_adb(tmp_path, broken, benchmark_exit=1)
    with pytest.raises(DeviceError, match="HARD_SWISH"):
        ADBDevice("R58", adb=str(adb)).profile(model)
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[-1].startswith("-s R58 shell rm -rf /data/local/tmp/edgekd-bench.")


def test_only_tflite_goes_to_benchmark_model(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    with pytest.raises(ConfigError, match="tflite files only"):
        ADBDevice("R58").profile(tmp_path / "m.onnx")


def test_check_reports_the_phone_and_where_benchmark_model_is(tmp_path):
    adb = fake_adb(tmp_path, LOGS / "newer.txt")
    found = ADBDevice("R58", adb=str(adb)).check()
    assert found["model"] == "Pixel 7" and found["benchmark_model"] == "/data/local/tmp/benchmark_model"


def test_edgekd_profile_reaches_adb_with_the_shared_settings(tmp_path, monkeypatch, capsys):
    from edgekd.cli import main

    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    adb = fake_adb(tmp_path, LOGS / "newer.txt")
    monkeypatch.setenv("PATH", f"{adb.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["profile", str(model), "--device", "adb://R58", "--threads", "3", "--runs", "7"]) == 0
    run = next(c for c in (tmp_path / "calls.txt").read_text().splitlines() if "--graph=" in c)
    assert "--num_threads=3" in run and "--num_runs=7" in run
    assert "5.069 ms" in capsys.readouterr().out  # benchmark_model's median, parsed and printed


def test_core_ml_compute_units_are_refused_by_name_before_adb_runs(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    adb = fake_adb(tmp_path, LOGS / "newer.txt")
    with pytest.raises(ConfigError, match="--compute-units CPU_ONLY is Core ML's"):
        ADBDevice("R58", adb=str(adb)).profile(model, ProfileSettings(compute_units="CPU_ONLY"))
    assert not (tmp_path / "calls.txt").exists()


def test_a_serial_or_file_that_looks_like_an_option_never_reaches_adb_as_one(tmp_path, monkeypatch):
    for bad in ("adb://-H", "adb://-s%20x", "adb://R58\n-d"):
        with pytest.raises(ConfigError, match="begins with '-'|spaces or control"):
            ADBDevice.from_uri(bad)
    with pytest.raises(ConfigError, match="begins with '-'"):
        ADBDevice("-e")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-m.tflite").write_bytes(b"TFL3")
    adb = fake_adb(tmp_path, LOGS / "newer.txt")
    ADBDevice("R58", adb=str(adb)).profile(Path("-m.tflite"))
    push = next(c for c in (tmp_path / "calls.txt").read_text().splitlines() if " push " in c)
    assert push.split()[3] == str(tmp_path / "-m.tflite")  # absolute: adb reads no option in it


def test_a_benchmark_model_without_a_median_is_a_mean_everywhere_it_is_shown(tmp_path, monkeypatch, capsys):
    """The older benchmark_model prints an average only: the measurement says so, holds no median, and
    the profile table and the profile row show the mean under its own name."""
    import math

    from edgekd.cli import main

    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    adb = fake_adb(tmp_path, LOGS / "older.txt")
    measured = ADBDevice("R58", adb=str(adb)).profile(model)
    assert measured.statistic == measured.latency.statistic == "mean"
    assert math.isnan(measured.latency.median_ms)
    assert measured.latency.central_ms == measured.latency.mean_ms == pytest.approx(7.8112)
    monkeypatch.setenv("PATH", f"{adb.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["profile", str(model), "--device", "adb://R58"]) == 0
    printed = capsys.readouterr().out
    assert "mean (the tool reports no median)" in printed and "7.811 ms" in printed
