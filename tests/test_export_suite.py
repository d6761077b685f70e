"""`edgekd export`: the table of formats × precisions, the parity gate from config, and the command on
a checkpoint. Real converters and runtimes, a tiny model, digits images."""

import json

import pytest
import torch

from edgekd.checkpoint import ModelInfo, save_model
from edgekd.cli import main
from edgekd.data import representative_images, stack_sample
from edgekd.errors import ConfigError
from edgekd.export.parity import ParityGate, load_gates
from edgekd.export.suite import (
    FAILED_EXPORT,
    FAILED_PARITY,
    OK,
    REFERENCE,
    UNSUPPORTED,
    ExportInputs,
    export_matrix,
    requested_pairs,
)
from tests.helpers import digits_cnn
from tests.test_export_formats import ARCH, tiny_model


def _inputs(digits, calibration=None):
    images, targets = stack_sample(digits.val, 96)
    return ExportInputs(digits.preprocessing, images, targets, calibration)


def test_requested_pairs_follow_the_registry():
    assert requested_pairs(["onnx"], None) == [("onnx", "fp32")]
    assert requested_pairs(["tflite"], None) == [("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8")]
    with pytest.raises(Exception, match="Did you mean 'tflite'"):
        requested_pairs(["tfite"], None)


@pytest.mark.slow
def test_matrix_reports_ok_unsupported_failed_export_and_failed_parity(tmp_path, digits):
    # The rows' statuses are what is checked, not the model: a small CNN converts to int8 .tflite
    # in a fraction of the timm student's time, and its int8 logits move like any int8 model's.
    torch.manual_seed(0)
    model = digits_cnn().eval()
    # int8 rounding moves the logits' direction by ~1e-3 (cosine ~0.999): a gate demanding 0.99999
    # must reject the artifact, while it is still written and listed.
    gates = {**load_gates(), "int8": ParityGate(min_cosine_similarity=0.99999)}
    rows = export_matrix(
        model,
        "digits_cnn",
        _inputs(digits, calibration=representative_images(digits.train, 200)),
        out_dir=tmp_path,
        pairs=[("onnx", "fp32"), ("onnx", "int8"), ("tflite", "int8")],
        gates=gates,
        latency=True,
    )
    by_pair = {(r.format, r.precision): r for r in rows}
    reference = by_pair["pytorch", "fp32"]
    assert reference.status == REFERENCE and reference.latency_ratio == 1.0 and reference.latency_ms > 0
    onnx = by_pair["onnx", "fp32"]
    assert onnx.status == OK and onnx.top1_agreement >= 0.995
    assert onnx.accuracy == pytest.approx(reference.accuracy)
    assert onnx.latency_ms > 0 and onnx.latency_ratio == pytest.approx(onnx.latency_ms / reference.latency_ms)
    assert by_pair["onnx", "int8"].status == UNSUPPORTED
    bad = by_pair["tflite", "int8"]
    assert bad.status == FAILED_PARITY and bad.failed
    assert (
        "cosine similarity with PyTorch's logits is" in bad.detail
        and "below the int8 gate of 0.99999" in bad.detail
    )
    assert bad.file.endswith("student-int8.tflite") and bad.top1_agreement is not None


@pytest.mark.slow
def test_a_converter_failure_is_a_row_not_a_crash(tmp_path, digits):
    class Histogram(torch.nn.Module):
        def forward(self, x):
            return torch.histc(x, bins=10).unsqueeze(0)

    rows = export_matrix(
        Histogram(), "histnet", _inputs(digits), out_dir=tmp_path, pairs=[("tflite", "fp32")], latency=False
    )
    assert rows[1].status == FAILED_EXPORT and "aten.histc.default" in rows[1].detail


@pytest.mark.slow
def test_ship_reports_a_failed_gate_and_checks_an_exported_file_again(tmp_path, digits):
    from edgekd.errors import ExportError
    from edgekd.export.ship import ship

    torch.manual_seed(0)
    model, inputs = digits_cnn().eval(), _inputs(digits)  # the gate is checked, not the model
    # No fp32 artifact reaches a cosine above 1: the gate must fail, and `ship` reports it, not raises.
    strict = {"fp32": ParityGate(min_cosine_similarity=1.5)}
    first = ship(model, "onnx", "fp32", inputs, strict, arch="digits_cnn", out_dir=tmp_path, latency=False)
    assert first.failed_parity and first.latency is None and first.cannot_run_here is None
    assert first.gate_message().startswith(f"{first.artifact.path}: cosine similarity with PyTorch's logits")
    # The file made earlier (a resumed fit's) is checked, not exported again: the same figures, ungated.
    again = ship(
        model, "onnx", "fp32", inputs, None, arch="digits_cnn", exported=first.artifact, latency=False
    )
    assert again.artifact == first.artifact and again.parity == first.parity and not again.failed_parity
    with pytest.raises(ExportError, match="not the onnx int8 asked to ship"):
        ship(model, "onnx", "int8", inputs, None, arch="digits_cnn", exported=first.artifact)


def test_gates_come_from_config_and_bad_config_is_named(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text("fp32: {min_top1_agreement: 0.5}\nint9: {}\n")
    with pytest.raises(ConfigError, match=r"unknown precision\(s\) \['int9'\]"):
        load_gates(path)
    path.write_text("fp32: {min_top1_agreemnt: 0.5}\n")
    with pytest.raises(ConfigError, match="min_top1_agreement"):
        load_gates(path)
    path.write_text("fp32: {min_top1_agreement: 0.5}\n")
    assert load_gates(path) == {"fp32": ParityGate(min_top1_agreement=0.5)}


@pytest.mark.slow
def test_export_command_on_a_checkpoint(tmp_path, digits, capsys):
    checkpoint = tmp_path / "student.safetensors"
    save_model(checkpoint, tiny_model(), ModelInfo(ARCH, digits.preprocessing))
    out = tmp_path / "exports"
    args = ["export", str(checkpoint), "--format", "onnx,openvino", "--precision", "fp32", "--out", str(out)]
    assert main([*args, "--parity-images", "64"]) == 0
    printed = capsys.readouterr().out
    assert "onnx" in printed and "openvino" in printed and "reference" in printed
    summary = json.loads((out / "exports.json").read_text())
    assert [(r["format"], r["status"]) for r in summary["rows"]] == [
        ("pytorch", "reference"),
        ("onnx", "ok"),
        ("openvino", "ok"),
    ]
    assert all(r["top1_agreement"] >= 0.995 for r in summary["rows"][1:])
    assert (out / "student-fp32.onnx").exists() and (out / "student-fp32.xml").exists()


def test_export_command_refuses_all_with_format_and_a_missing_source(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--all", "--format", "onnx"]) == 2
    assert "--all exports every format" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing.safetensors")]) == 2
    assert "no such run directory or .safetensors checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_export_merges_its_rows_into_an_earlier_exports_json(tmp_path, digits, capsys):
    checkpoint = tmp_path / "student.safetensors"
    save_model(checkpoint, tiny_model(), ModelInfo(ARCH, digits.preprocessing))
    out = tmp_path / "exports"
    earlier_rows = [
        {"format": "pytorch", "precision": "fp32", "status": REFERENCE, "accuracy": 0.1},
        {"format": "tflite", "precision": "int8", "status": OK, "file": "model-int8.tflite"},
        {"format": "onnx", "precision": "fp32", "status": FAILED_EXPORT, "detail": "an older converter"},
    ]
    out.mkdir()
    (out / "exports.json").write_text(json.dumps({"arch": ARCH, "rows": earlier_rows}))
    args = ["export", str(checkpoint), "--format", "onnx", "--precision", "fp32", "--out", str(out)]
    assert main([*args, "--no-latency", "--parity-images", "32", "--calibration-images", "8"]) == 0
    rows = json.loads((out / "exports.json").read_text())["rows"]
    # Earlier order kept; the keys exported again replaced (reference, onnx fp32); tflite int8 kept.
    assert [(r["format"], r["precision"], r["status"]) for r in rows] == [
        ("pytorch", "fp32", REFERENCE),
        ("tflite", "int8", OK),
        ("onnx", "fp32", OK),
    ]
    assert rows[0]["accuracy"] != 0.1 and rows[1] == earlier_rows[1] and rows[2]["top1_agreement"] >= 0.99

    # Another model's table in the same directory is refused before anything is exported.
    alien = json.dumps({"arch": "resnet18", "rows": earlier_rows})
    (out / "exports.json").write_text(alien)
    (out / "student-fp32.onnx").unlink()
    assert main([*args, "--no-latency", "--parity-images", "32"]) == 2
    assert "lists exports of resnet18, not" in capsys.readouterr().err
    assert (out / "exports.json").read_text() == alien and not (out / "student-fp32.onnx").exists()


def test_a_request_no_format_can_meet_is_refused_listing_the_pairs():
    with pytest.raises(ConfigError, match=r"--precision int4: no such precision.*onnx fp32"):
        requested_pairs(["onnx"], ["int4"])
    with pytest.raises(
        ConfigError, match=r"none of the requested exports exists \(onnx int8\); valid: onnx fp32"
    ):
        requested_pairs(["onnx"], ["int8"])
    assert requested_pairs(["onnx", "tflite"], ["int8"]) == [("onnx", "int8"), ("tflite", "int8")]


def test_export_inputs_refuse_zero_images(digits):
    from edgekd.export.suite import export_inputs

    with pytest.raises(
        ConfigError, match=r"--parity-images 0: parity and int8 calibration need at least one"
    ):
        export_inputs(digits, 0, 8)
    with pytest.raises(ConfigError, match=r"--calibration-images 0"):
        export_inputs(digits, 8, 0)
    assert len(export_inputs(digits, 8, 4).calibration) == 4
