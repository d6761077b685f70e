"""SSH profiling against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): the whole path for
real, its failure cases, and after every one of them no temporary directory left on the device."""

import contextlib
import glob
import re
import subprocess
import sys
import threading
import time
import venv

import pytest

from edgekd.devices import ProfileSettings
from edgekd.devices.ssh import REMOTE_PREFIX, SSHDevice
from edgekd.errors import ConfigError, DeviceError
from tests.helpers import shared_export

# The bench process on the device (`exec python bench.py` there), not the local ssh client whose
# command line holds the same words.
REMOTE_BENCH = f"^{sys.executable} /tmp/{REMOTE_PREFIX}.*/bench.py"


def leftovers() -> list[str]:
    # The device is this machine, and its shell has no TMPDIR: the bench directories live in /tmp.
    return glob.glob(f"/tmp/{REMOTE_PREFIX}*")


@pytest.fixture(scope="module")
def tflite(tmp_path_factory, digits):
    """The tiny timm student as fp32 .tflite, converted once per session (the export tests read it too)."""
    return shared_export(tmp_path_factory, "tflite", digits.preprocessing)


@pytest.fixture
def device(loopback_ssh):
    assert not leftovers()
    yield SSHDevice.from_uri(loopback_ssh.uri, python=sys.executable, ssh_config=loopback_ssh.client_config)
    assert not leftovers(), leftovers()


@pytest.mark.slow
def test_profile_over_ssh_times_the_artifact_on_the_device_and_leaves_nothing(device, tflite):
    measured = device.profile(tflite.path, ProfileSettings(threads=1, runs=20, warmup=3, min_seconds=0.2))
    lat = measured.latency
    assert lat.runs >= 20 and 0 < lat.median_ms <= lat.p90_ms <= lat.p99_ms and lat.iqr_ms >= 0
    assert lat.cold_start_ms > lat.median_ms and lat.runtime == "litert"
    assert measured.device == device.uri and measured.artifact == tflite.path.name
    fingerprint = measured.fingerprint
    assert fingerprint["cores"] >= 1 and fingerprint["os"].startswith("Linux") and fingerprint["cpu"]
    assert fingerprint["runtimes"]["ai-edge-litert"]  # the device's own runtime version


@pytest.mark.slow
def test_check_reports_the_devices_runtimes(device):
    found = device.check()
    assert found["runtimes"]["ai-edge-litert"] and found["runtimes"]["onnxruntime"]
    assert "tflite-runtime" in found["runtimes"]  # absent there: listed with None


@pytest.mark.slow
def test_openvino_ir_goes_with_its_weights_and_reports_layers(device, tmp_path_factory, digits):
    artifact = shared_export(tmp_path_factory, "openvino", digits.preprocessing)  # its .bin beside it
    measured = device.profile(artifact.path, ProfileSettings(runs=5, warmup=1, min_seconds=0.05))
    assert measured.latency.runtime == "openvino"
    assert measured.layers and all(row["ms"] >= 0 for row in measured.layers)
    assert measured.layers[0]["ms"] == max(row["ms"] for row in measured.layers)


@pytest.mark.slow
def test_a_wrong_port_is_unreachable(loopback_ssh, tflite):
    from tests.sshd import free_port

    wrong = SSHDevice.from_uri(
        f"ssh://{loopback_ssh.user}@127.0.0.1:{free_port()}", ssh_config=loopback_ssh.client_config
    )
    with pytest.raises(DeviceError, match=r"unreachable \(.*Connection refused"):
        wrong.profile(tflite.path)
    assert not leftovers()


@pytest.mark.slow
def test_a_key_the_device_does_not_know_fails_authentication(loopback_ssh, tflite, tmp_path):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True
    )
    config = tmp_path / "ssh_config"
    config.write_text(
        loopback_ssh.client_config.read_text().replace(str(loopback_ssh.user_key), str(tmp_path / "stranger"))
    )
    with pytest.raises(DeviceError, match="authentication failed.*authorized_keys"):
        SSHDevice.from_uri(loopback_ssh.uri, ssh_config=config).profile(tflite.path)


@pytest.mark.slow
def test_an_unknown_host_key_is_refused_not_accepted(loopback_ssh, tflite, tmp_path):
    (tmp_path / "known_hosts").write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(
        loopback_ssh.client_config.read_text().replace(
            str(loopback_ssh.root / "known_hosts"), str(tmp_path / "known_hosts")
        )
    )
    with pytest.raises(DeviceError, match="host key is unknown or changed"):
        SSHDevice.from_uri(loopback_ssh.uri, ssh_config=config).profile(tflite.path)
    assert (tmp_path / "known_hosts").read_text() == ""  # nothing was added behind the user's back


@pytest.mark.slow
def test_a_device_without_the_runtime_names_the_package_to_install(loopback_ssh, tflite, tmp_path):
    # A Python with numpy but no TFLite runtime: this interpreter's site-packages minus the runtimes
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)
    python = bare / "bin" / "python"
    sites = subprocess.run(
        [sys.executable, "-c", "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    numpy_only = tmp_path / "numpy-only"
    numpy_only.mkdir()
    (numpy_only / "numpy").symlink_to(f"{sites}/numpy")
    if glob.glob(f"{sites}/numpy.libs"):
        (numpy_only / "numpy.libs").symlink_to(f"{sites}/numpy.libs")
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={numpy_only} exec {python} "$@"\n')
    wrapper.chmod(0o755)
    device = SSHDevice.from_uri(loopback_ssh.uri, python=str(wrapper), ssh_config=loopback_ssh.client_config)
    with pytest.raises(
        DeviceError, match=r"no runtime for tflite.*pip install ai-edge-litert \(or tflite-runtime"
    ):
        device.profile(tflite.path)
    assert not leftovers()


@pytest.mark.slow
def test_a_missing_python_on_the_device_is_named(device, tflite):
    broken = SSHDevice(
        device.host, device.user, device.port, python="/nonexistent/python3", ssh_config=device.ssh_config
    )
    with pytest.raises(DeviceError, match="/nonexistent/python3 was not found there"):
        broken.profile(tflite.path)


@pytest.mark.slow
def test_a_bench_killed_mid_run_fails_clearly_and_leaves_nothing(device, tflite):
    failure = []

    def profile():
        try:
            device.profile(tflite.path, ProfileSettings(runs=10**6, min_seconds=120))
        except DeviceError as e:
            failure.append(str(e))

    worker = threading.Thread(target=profile)
    worker.start()
    try:
        killed = False
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            time.sleep(0.5)
            # the device's bench, not our ssh client (whose command line holds the same words)
            killed = subprocess.run(["pkill", "-KILL", "-f", REMOTE_BENCH]).returncode == 0
    finally:
        worker.join(120)
    assert killed, "the bench never started on the device"
    assert failure and "was killed on the device" in failure[0], failure


@pytest.mark.slow
def test_a_timeout_stops_the_bench_and_cleans_up(device, tflite):
    with pytest.raises(DeviceError, match="no answer within 3 s"):
        device.profile(tflite.path, ProfileSettings(runs=10**6, min_seconds=120, timeout_s=3))
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", REMOTE_BENCH], capture_output=True).returncode == 1


def test_a_malformed_uri_is_refused():
    for bad in ("ssh://", "http://pi", "ssh://pi:notaport", "ssh://[::1", "ssh://@pi", "ssh://pi@"):
        with pytest.raises(ConfigError):
            SSHDevice.from_uri(bad)


@pytest.mark.slow
def test_the_host_comes_after_a_double_dash_in_every_ssh_command(loopback_ssh, monkeypatch):
    """Every ssh edgekd starts goes through SSHDevice.run; its argv ends `-- HOST COMMAND`, so no
    OpenSSH can read the host as an option, whatever its own hostname checks."""
    config = loopback_ssh.client_config
    device = SSHDevice.from_uri(loopback_ssh.uri, python=sys.executable, ssh_config=config)
    started = []
    real_run = subprocess.run

    def recording_run(argv, **kwargs):
        started.append(argv)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    device.check()
    assert len(started) >= 4  # mktemp, tar, bench --check, pkill, rm
    for argv in started:
        assert argv[0] == "ssh" and argv[-3:-1] == ["--", "127.0.0.1"], argv
        assert argv.count("--") == 1


@pytest.mark.slow
def test_the_double_dash_alone_stops_a_host_that_reads_as_an_option(loopback_ssh, tmp_path, monkeypatch):
    """A device whose host got past the URI checks (set on the object after they ran): without `--`,
    ssh would take `-oProxyCommand=...` as an option and the next word (the remote command, here
    `true`, a valid host name) as the host, and run the proxy command on this machine."""
    monkeypatch.chdir(tmp_path)
    device = SSHDevice.from_uri(loopback_ssh.uri, ssh_config=loopback_ssh.client_config)
    object.__setattr__(device, "host", "-oProxyCommand=touch${IFS}marker")
    with contextlib.suppress(DeviceError):  # ssh refuses the host name; how it says so varies
        assert device.run("true", timeout_s=30).returncode != 0
    assert list(tmp_path.iterdir()) == []


def injection_uris(port: int, user: str) -> list[str]:
    return [
        "ssh://-oProxyCommand=touch MARKER",
        "ssh://-oProxyCommand=touch${IFS}MARKER",
        f"ssh://-oProxyCommand=touch${{IFS}}MARKER:{port}",
        f"ssh://{user}@-oProxyCommand=touch${{IFS}}MARKER:{port}",
        f"ssh://-oProxyCommand=touch${{IFS}}MARKER@127.0.0.1:{port}",
        f"ssh://-lroot@127.0.0.1:{port}",
        f"ssh://{user}@127.0.0.1:{port}\t-oProxyCommand=touch${{IFS}}MARKER",
    ]


@pytest.mark.slow
def test_option_like_hosts_and_users_never_run_anything(loopback_ssh, tmp_path, monkeypatch, capsys):
    from edgekd.cli import main

    artifact = tmp_path / "m.tflite"
    artifact.write_bytes(b"TFL3")  # refused before it is read
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # where a proxy command's `touch MARKER` would land
    for uri in injection_uris(loopback_ssh.port, loopback_ssh.user):
        for argv in (["profile", str(artifact), "--device", uri], ["devices", "check", uri]):
            assert main(argv) == 2, argv
            out, err = capsys.readouterr()
            assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
            assert "begins with '-'" in err or "no spaces or control characters" in err, err
    assert list(cwd.iterdir()) == [] and not leftovers()


@pytest.mark.slow
def test_a_password_in_a_uri_is_refused_and_never_shown(loopback_ssh, capsys):
    from edgekd.cli import main

    uri = f"ssh://{loopback_ssh.user}:hun@ter2@127.0.0.1:{loopback_ssh.port}"  # a password may hold an @
    for argv in (["devices", "add", "pw", uri], ["devices", "check", uri]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no password" in err and "ssh-copy-id" in err and "ter2" not in err and "hun" not in err
    with pytest.raises(ConfigError, match="no password"):
        SSHDevice.from_uri(uri)


@pytest.mark.slow
def test_a_garbage_artifact_fails_on_the_device_in_one_line(device, tmp_path):
    garbage = tmp_path / "m.tflite"
    garbage.write_bytes(b"garbage!")
    with pytest.raises(DeviceError) as failed:
        device.profile(garbage, ProfileSettings(runs=1, warmup=0, min_seconds=0))
    message = str(failed.value)
    assert "\n" not in message and "Traceback" not in message
    expected = r"failed \(exit 2\): \S*m\.tflite \(tflite\): \w+ cannot load or run it: .*Flatbuffer"
    assert re.search(expected, message), message
