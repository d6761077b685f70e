"""One way to time an artifact on this host: the latency `ship` reports (what `fit` and `edgekd export`
show) and `edgekd profile --device local` both go through `edgekd.bench`, so the same file is compiled
with the same runtime settings whichever asks. Real runtimes, a tiny model; timings are noisy, so
nothing here asserts one: the settings and the structure are what must agree."""

import json
from dataclasses import asdict

import pytest

from edgekd.cli import main
from edgekd.data import stack_sample
from edgekd.devices import runtime_description
from edgekd.export.ship import ExportInputs, ship
from tests.helpers import SHARED_ARCH as ARCH
from tests.helpers import shared_export, shared_tiny_model


def _openvino_default_precision() -> str:
    """The precision OpenVINO's CPU plugin computes a float model in on this machine when an app sets
    no hint: bf16 where the CPU has it natively, f32 elsewhere."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt, runtime, settings",
    [
        ("tflite", "litert", lambda: {}),
        (
            "openvino",
            "openvino",
            lambda: {
                "inference_precision": _openvino_default_precision(),
                "streams": "1",
                "performance_hint": "LATENCY",
            },
        ),
        (
            "onnx",
            "onnxruntime",
            lambda: {"graph_optimization": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL"},
        ),
    ],
    ids=["tflite", "openvino", "onnx"],
)
def test_ship_and_profile_local_time_a_file_with_the_same_runtime_settings(
    fmt, runtime, settings, tmp_path, tmp_path_factory, digits, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables to the terminal; keep the runtime whole
    images, targets = stack_sample(digits.val, 32)
    inputs = ExportInputs(digits.preprocessing, images, targets)
    # The file the export tests converted (once per session): what is compared here is the timing.
    exported = shared_export(tmp_path_factory, fmt, digits.preprocessing)
    shipped = ship(shared_tiny_model(), fmt, "fp32", inputs, None, arch=ARCH, exported=exported, threads=2)
    assert shipped.latency is not None, shipped
    out = tmp_path / "measured.json"
    argv = [str(shipped.artifact.path), "--threads", "2", "--runs", "5", "--warmup", "1"]
    assert main(["profile", *argv, "--min-seconds", "0", "--device", "local", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    host, profiled = asdict(shipped.latency), json.loads(out.read_text())["latency"]
    for key in ("runtime", "runtime_version", "threads", "settings", "statistic", "device"):
        assert profiled[key] == host[key], key
    assert (host["runtime"], host["threads"], host["statistic"]) == (runtime, 2, "median")
    # What a deployed app gets: OpenVINO's own precision for this CPU, not one forced for parity.
    assert host["settings"] == settings()
    assert runtime_description(host) in printed and host["runs"] >= 50 and profiled["runs"] >= 5
