"""Ethos-U compilation with Arm's real Vela compiler on int8 artifacts from edgekd's own exporter."""

import json
import sys

import pytest
import torch
import torch.nn as nn

from edgekd.artifact import Contract
from edgekd.data import stack
from edgekd.errors import ConfigError, DependencyError, ExportError
from edgekd.export import export
from tests.test_export_tflite import shared_zoo_int8


@pytest.fixture(scope="module")
def vela():
    pytest.importorskip(
        "ethosu.vela", reason="Arm's Vela compiler is not installed (pip install 'edgekd[vela]')"
    )
    import edgekd.vela

    return edgekd.vela


def _contract(arch: str) -> Contract:
    return Contract(
        arch=arch,
        input_name="input",
        input_shape=(1, 32, 32, 3),
        layout="NHWC",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        labels=tuple(str(i) for i in range(10)),
        precision="int8",
    )


class TinyNet(nn.Module):
    """conv/ReLU/pool/linear; the stride-2 convolution's symmetric padding becomes an explicit PAD."""

    def __init__(self, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act = activation or nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = self.act(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _int8(model: nn.Module, arch: str, out, digits):
    torch.manual_seed(0)
    images, _ = stack(digits.train, limit=64)
    return export(
        model.eval(),
        "tflite",
        out,
        contract=_contract(arch),
        stem=arch,
        calibration=images,
        min_calibration=64,
    )


@pytest.fixture(scope="module")
def tiny_int8(vela, digits, tmp_path_factory):
    torch.manual_seed(0)
    return _int8(TinyNet(), "tiny_net", tmp_path_factory.mktemp("tiny"), digits)


@pytest.mark.slow
def test_tiny_int8_net_runs_entirely_on_the_npu(vela, tiny_int8, tmp_path):
    # The exporter's NHWC wrapper leaves no TRANSPOSE; the explicit PAD is fused by Vela.
    ops = [op_type for op_type, _ in vela.tflite_ops(tiny_int8.path)]
    assert "TRANSPOSE" not in ops and "DEQUANTIZE" not in ops and "PAD" in ops
    report = vela.compile_for_ethos_u(tiny_int8.path, tmp_path)
    assert report.accelerator == "ethos-u55-256"
    assert (report.system_config, report.memory_mode) == ("Ethos_U55_High_End_Embedded", "Shared_Sram")
    assert report.inference_ms > 0 and report.cycles > 0 and report.macs > 0
    assert report.sram_bytes > 0 and report.flash_bytes > 0
    assert report.npu_ops > 0 and report.cpu_ops == 0 and report.cpu_fallbacks == ()
    assert report.npu_op_share == 1.0
    assert report.compiled_path == tmp_path / "tiny_net-int8_vela.tflite" and report.compiled_path.exists()
    assert {op for op, _ in vela.tflite_ops(report.compiled_path)} == {"ethos-u"}
    saved = json.loads((tmp_path / "tiny_net-int8_vela.tflite.json").read_text())
    assert saved["npu_ops"] == report.npu_ops and saved["inference_ms"] == report.inference_ms
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.slow
def test_system_config_and_memory_mode_are_the_callers(vela, tiny_int8, tmp_path):
    report = vela.compile_for_ethos_u(
        tiny_int8.path, tmp_path, "ethos-u55-128", "Ethos_U55_Deep_Embedded", "Sram_Only"
    )
    assert (report.accelerator, report.system_config, report.memory_mode) == (
        "ethos-u55-128",
        "Ethos_U55_Deep_Embedded",
        "Sram_Only",
    )
    assert report.inference_ms > 0 and report.npu_op_share == 1.0


@pytest.mark.slow
def test_common_student_activations_all_run_on_the_npu(vela, digits, tmp_path, tmp_path_factory):
    _, artifact = shared_zoo_int8(tmp_path_factory, digits)  # test_export_tflite checks its tensors
    report = vela.compile_for_ethos_u(artifact.path, tmp_path / "vela")
    assert report.cpu_fallbacks == () and report.npu_op_share == 1.0


@pytest.mark.slow
def test_ops_the_npu_cannot_run_are_named(vela, digits, tmp_path):
    # Softsign is x / (1 + |x|): TFLite has an int8 DIV but the Ethos-U55 has none, so DIV stays on
    # the CPU (and the layout transposes around it turn the pooling MEAN into a channel reduction,
    # which Vela refuses too).
    torch.manual_seed(0)
    artifact = _int8(TinyNet(nn.Softsign()), "softsign_net", tmp_path / "export", digits)
    report = vela.compile_for_ethos_u(artifact.path, tmp_path / "vela")
    assert "DIV" in report.cpu_op_types
    assert report.cpu_ops == len(report.cpu_fallbacks) > 0
    assert 0 < report.npu_op_share < 1 and report.npu_ops > 0
    div = next(op for op in report.cpu_fallbacks if op.op_type == "DIV")
    assert div.name and div.reason == "Unsupported opType"  # Vela's words


@pytest.mark.slow
def test_unknown_memory_mode_lists_the_defined_ones(vela, tiny_int8, tmp_path):
    with pytest.raises(
        ConfigError, match=r"memory_mode 'Shared_SRAM' is not defined .* Did you mean 'Shared_Sram'"
    ):
        vela.compile_for_ethos_u(tiny_int8.path, tmp_path, memory_mode="Shared_SRAM")
    with pytest.raises(
        ConfigError, match=r"system_config 'U55' is not defined .*Ethos_U55_High_End_Embedded"
    ):
        vela.compile_for_ethos_u(tiny_int8.path, tmp_path, system_config="U55")


def test_a_vela_failure_carries_velas_message(vela, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(
        ExportError, match=r"Vela could not compile broken.tflite for ethos-u55-256: .+"
    ) as info:
        vela.compile_for_ethos_u(broken, tmp_path / "out")
    message = str(info.value)
    assert "Traceback" not in message and "broken_vela.log" in message
    assert (tmp_path / "out" / "broken_vela.log").exists()
    with pytest.raises(ExportError, match="invalid choice: 'ethos-u99'"):
        vela.compile_for_ethos_u(broken, tmp_path / "out", accelerator="ethos-u99")
    with pytest.raises(ExportError, match="no such .tflite file"):
        vela.compile_for_ethos_u(tmp_path / "missing.tflite", tmp_path / "out")


def test_missing_vela_names_the_pip_extra(monkeypatch, tmp_path):
    import edgekd.vela

    # None in sys.modules is how Python marks a module that cannot be imported.
    monkeypatch.setitem(sys.modules, "ethosu", None)
    monkeypatch.setitem(sys.modules, "ethosu.vela", None)
    with pytest.raises(DependencyError, match=r"pip install 'edgekd\[vela\]'"):
        edgekd.vela.compile_for_ethos_u(tmp_path / "model.tflite", tmp_path)
