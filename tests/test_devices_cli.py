"""The device commands end to end on the loopback OpenSSH server: devices add/list/check/remove,
profile with --record into the user's profile directory, latency calibrate on the recorded row,
and fit --device ending with measured against predicted latency."""

import csv
import json
import subprocess
import sys

import pytest

from edgekd.cli import main
from edgekd.devices.registry import DeviceEntry, add_device, connect, load_devices
from edgekd.errors import ConfigError, UnknownNameError
from tests.test_devices_ssh import leftovers, tflite  # noqa: F401  (the module's artifact fixture)

EDGEKD = [sys.executable, "-m", "edgekd"]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables to the terminal; keep URIs whole


@pytest.fixture
def loop(loopback_ssh):
    name = "loop"
    add_device(
        DeviceEntry(
            name, loopback_ssh.uri, python=sys.executable, ssh_config=str(loopback_ssh.client_config)
        ),
        replace=True,
    )
    yield name
    assert not leftovers()


def test_the_registry_round_trips_and_refuses_bad_entries(loop, loopback_ssh, capsys):
    assert load_devices()[loop].uri == loopback_ssh.uri and connect(loop).uri == loopback_ssh.uri
    with pytest.raises(ConfigError, match="exists.*--replace"):
        add_device(DeviceEntry(loop, "local"))
    with pytest.raises(ConfigError, match=r"write local, ssh://\[user@\]host"):
        add_device(DeviceEntry("odd", "telnet://pi"))
    with pytest.raises(UnknownNameError, match="no device named 'lop'.*loop"):
        connect("lop")
    assert main(["devices", "list"]) == 0 and loopback_ssh.uri in capsys.readouterr().out
    assert main(["devices", "check", loop]) == 0
    out = capsys.readouterr().out
    assert "reachable" in out and "ai-edge-litert" in out and "not installed" in out  # tflite-runtime
    assert main(["devices", "remove", loop]) == 0 and loop not in load_devices()


def test_profile_over_ssh_records_a_row_that_calibration_fits(loop, tflite, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "measurement.json"
    args = [
        "profile",
        str(tflite.path),
        "--device",
        loop,
        "--threads",
        "2",  # a group of its own in profiles/host.csv (whose 109 rows are 1-thread), so the fit is quick
        "--runs",
        "20",
        "--min-seconds",
        "0.2",
        "--record",
        "--target",
        "host",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "median" in printed and "cold start" in printed and "recorded in" in printed
    measured = json.loads(out.read_text())
    assert measured["device"].startswith("ssh://") and measured["latency"]["runs"] >= 20
    from edgekd.profiles import user_profiles_dir

    with open(user_profiles_dir() / "host.csv") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    (row,) = [r for r in rows if r["source"].startswith("measured: edgekd profile on ssh://")]
    assert (row["model"], row["input_size"], row["precision"], row["runtime"]) == (
        "mobilenetv3_small_050",
        "32",
        "fp32",
        "litert",
    )
    assert float(row["latency_ms_median"]) == pytest.approx(measured["latency"]["median_ms"], rel=1e-4)

    from edgekd.latency import calibration_report
    from edgekd.targets import get_target

    report = calibration_report(get_target("host"), "fp32", 2)
    assert any(r.source.startswith("measured: edgekd profile on ssh://") for r in report.rows)
    assert report.after_mape < report.before_mape
    assert len(report.rows) == 1 and report.rows[0].threads == 2
    assert main(["latency", "calibrate", "--target", "host", "--threads", "2"]) == 0
    assert "before (priors)" in capsys.readouterr().out


def test_record_needs_a_target_and_a_wrong_target_fails_first(tflite, capsys):  # noqa: F811
    assert main(["profile", str(tflite.path), "--record"]) != 0
    assert "--record needs --target" in capsys.readouterr().err
    assert main(["profile", str(tflite.path), "--target", "pi55"]) != 0
    assert "pi5" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_with_a_device_ends_with_measured_against_predicted(loop, tmp_path):
    args = [
        "fit",
        "--target",
        "pi5",
        "--student",
        "mobilenetv3_small_050",
        "--epochs",
        "1",
        "--teacher-epochs",
        "1",
        "--device",
        loop,
        "--runs-dir",
        str(tmp_path / "runs"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    done = subprocess.run(EDGEKD + args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    result = json.loads((run / "result.json").read_text())
    device = result["device_latency"]
    assert device["device"] == loop and device["measured_ms"] > 0 and device["predicted_for"] == "pi5"
    assert device["measured_over_predicted"] == pytest.approx(device["measured_ms"] / device["predicted_ms"])
    report = (run / "report.md").read_text()
    assert f"Measured on {loop}" in report and "measured / predicted" in report
    assert (run / "device-profile.json").exists()
