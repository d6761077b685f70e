"""Quantization-aware training: the PT2E shim, prepare -> KD fine-tune -> int8 .tflite, compared with
post-training int8 on the digits test split."""

import importlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekd.artifact import Contract, load_artifact, make_contract
from edgekd.data import stack
from edgekd.distill.losses import make_loss
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import ExportError
from edgekd.export import MIN_CALIBRATION_IMAGES, export
from edgekd.runtimes import open_session, predict, to_layout
from tests.helpers import digits_cnn, one_torch_thread, shared_digits_cnn_int8, shared_trained_digits_cnn


def _int8_contract(digits) -> Contract:
    return make_contract("digits_cnn", "tflite", digits.preprocessing, "int8")


def test_upstream_still_needs_the_pt2e_qat_shim(monkeypatch):
    """When this fails, torch/torchao/litert-torch fixed PT2E QAT upstream: delete the shim section
    of edgekd/quantize.py and this test."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgekd import quantize
    from edgekd.export.tflite import int8_quantizer

    assert quantize.apply_pt2e_qat_shim(), "the probe no longer sees the bug: delete the shim"
    assert quantize.apply_pt2e_qat_shim()  # idempotent: a second call patches nothing twice
    for name, original in quantize.UNPATCHED.items():
        patched = getattr(importlib.import_module(name), quantize._PATTERN_FN)
        assert patched.__wrapped__ is original
        monkeypatch.setattr(importlib.import_module(name), quantize._PATTERN_FN, original)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    graph = torch.export.export(net, (torch.randn(2, 3, 8, 8),)).module()
    with pytest.raises(ValueError, match=r"Expected `mod` to be an instance of `torch.nn.Module`"):
        prepare_qat_pt2e(graph, int8_quantizer(qat=True))


def test_prepare_qat_checks_its_example():
    from edgekd.quantize import prepare_qat

    with pytest.raises(ExportError, match=r"an \(N, C, H, W\) float tensor; got torch.Size\(\[3, 8, 8\]\)"):
        prepare_qat(digits_cnn(), torch.zeros(3, 8, 8))
    with pytest.raises(ExportError, match="dtype torch.uint8; pass float images normalised"):
        prepare_qat(digits_cnn(), torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    untrained = digits_cnn()
    nn.init.zeros_(untrained[4].weight)  # as timm initialises the last BN of a residual block
    with pytest.raises(ExportError, match=r"batch-norm layers with a zero weight \(gamma\): 4\. .* NaN"):
        prepare_qat(untrained, torch.zeros(2, 3, 32, 32))


@pytest.fixture(scope="module")
def fp32_cnn(digits):
    """A small CNN trained for 5 epochs on the digits train split (~99 % test accuracy, ~1 s), once per
    session (test_export_tflite quantizes the same model)."""
    return shared_trained_digits_cnn(digits)


@pytest.fixture(scope="module")
def ptq_artifact(digits, tmp_path_factory):
    """Its post-training int8 .tflite, calibrated on training images, once per session."""
    return shared_digits_cnn_int8(tmp_path_factory, digits)


@pytest.fixture(scope="module")
def qat_run(fp32_cnn, digits, tmp_path_factory):
    """prepare_qat, 2 epochs of KD from the fp32 model through the ordinary trainer, int8 export."""
    from edgekd.quantize import prepare_qat

    teacher_before = {k: v.clone() for k, v in fp32_cnn.state_dict().items()}
    images, _ = stack(digits.train, limit=2)
    with one_torch_thread():
        qat = prepare_qat(fp32_cnn, images, arch="digits_cnn")
        history = train(
            qat,
            digits,
            TrainConfig(epochs=2, batch_size=64, lr=5e-4),
            loss=make_loss("kd"),
            teacher=fp32_cnn,
        )
        out = tmp_path_factory.mktemp("qat")
        artifact = export(qat, "tflite", out, contract=_int8_contract(digits), stem="qat")
    teacher_unchanged = all(torch.equal(teacher_before[k], v) for k, v in fp32_cnn.state_dict().items())
    return qat, history, artifact, teacher_unchanged


def _accuracy(logits: np.ndarray, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels.numpy()).mean())


@pytest.mark.slow
def test_qat_int8_matches_fp32_accuracy_and_ptq(fp32_cnn, ptq_artifact, qat_run, digits):
    # Measured on the 269 test images, fp32 / PTQ int8 / QAT int8 accuracy with the model seeded 0-4:
    # 99.63/99.63/99.63, 99.26/98.88/99.26, 99.26/99.26/99.26, 99.63/99.63/99.63, 99.63/99.63/99.63 %;
    # top-1 agreement with fp32 is 100 % for QAT on every seed, 99.63 % for PTQ on seed 1. The task
    # is too easy for PTQ to lose much, so QAT's gate is "within 1 point of fp32", not "beats PTQ".
    _, history, artifact, _ = qat_run
    images, labels = stack(digits.test)
    assert len(labels) == 269
    with torch.no_grad():
        reference = fp32_cnn(images).numpy()
    nhwc = to_layout(images.numpy(), "NHWC")
    ptq = predict(open_session(ptq_artifact), nhwc)
    qat = predict(open_session(artifact), nhwc)
    fp32_accuracy = _accuracy(reference, labels)
    assert fp32_accuracy >= 0.95, "the fixture model did not train"
    assert _accuracy(ptq, labels) >= fp32_accuracy - 0.02
    assert _accuracy(qat, labels) >= fp32_accuracy - 0.01
    assert (qat.argmax(1) == reference.argmax(1)).mean() >= 0.98
    assert history[-1].val_teacher_agreement >= 0.98  # the trainer's own KD bookkeeping worked


@pytest.mark.slow
def test_qat_artifact_runs_what_was_trained(qat_run, digits):
    # The fake-quantized PyTorch graph and the int8 file compute the same thing: over the 269 test
    # images and seeds 0-4 the logits differ by at most 2 output quantization steps (~0.2), and the
    # top-1s agree on 100 %.
    qat, _, artifact, _ = qat_run
    images, _ = stack(digits.test, limit=64)
    with torch.no_grad():
        trained = qat.eval()(images).numpy()
    shipped = predict(open_session(artifact), to_layout(images.numpy(), "NHWC"))
    output_step = artifact.contract.output_quant[0]
    assert np.abs(trained - shipped).max() <= 3 * output_step + 1e-6  # seeds 0-4: at most 2 steps
    assert (trained.argmax(1) == shipped.argmax(1)).mean() >= 0.98


@pytest.mark.slow
def test_qat_artifact_is_fully_int8_with_the_ptq_contract(qat_run, ptq_artifact):
    from ai_edge_litert.interpreter import Interpreter

    _, _, artifact, teacher_unchanged = qat_run
    assert teacher_unchanged, "prepare_qat must copy the model, not train the teacher's weights"
    interpreter = Interpreter(model_path=str(artifact.path))
    floats = [t["name"] for t in interpreter.get_tensor_details() if np.dtype(t["dtype"]).kind == "f"]
    assert floats == []  # int8 activations and weights, int32 biases and shapes; nothing in float
    (tensor_in,), (tensor_out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert tensor_in["dtype"] == np.int8 and tensor_out["dtype"] == np.int8
    assert list(tensor_in["shape"]) == [1, 32, 32, 3]  # NHWC, as PTQ
    contract = load_artifact(artifact.path).contract
    assert contract.io_dtype == "int8" and contract.precision == "int8"
    assert contract.input_quant == pytest.approx(tensor_in["quantization"])
    assert contract.output_quant == pytest.approx(tensor_out["quantization"])
    ptq = load_artifact(ptq_artifact.path).contract
    assert replace(contract, input_quant=None, output_quant=None) == replace(
        ptq, input_quant=None, output_quant=None
    )  # same contract fields and versions as the PTQ sidecar, only the learned ranges differ
    assert json.loads(artifact.sidecar.read_text())["file"] == artifact.path.name
    leftovers = [p for p in artifact.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_qat_export_refuses_what_would_not_ship_as_trained(qat_run, digits, tmp_path):
    qat, _, _, _ = qat_run
    contract = _int8_contract(digits)
    only_int8 = r"exports only as format 'tflite' with precision 'int8' \(asked: 'tflite', 'fp32'\)"
    with pytest.raises(ExportError, match=only_int8):
        export(qat, "tflite", tmp_path, contract=replace(contract, precision="fp32"))
    images, _ = stack(digits.train, limit=MIN_CALIBRATION_IMAGES)
    with pytest.raises(ExportError, match="learned its activation ranges in training; drop calibration="):
        export(qat, "tflite", tmp_path, contract=contract, calibration=images)
    other_size = r"input is .* \(64, 64, 3\), but the QAT model was prepared for \(32, 32, 3\)"
    with pytest.raises(ExportError, match=other_size):
        export(qat, "tflite", tmp_path, contract=replace(contract, input_shape=(1, 64, 64, 3)))
    with pytest.raises(ExportError, match=r"takes NCHW batches of shape \(N, 3, 32, 32\), as prepared"):
        qat(torch.zeros(1, 32, 32, 3))
    assert list(tmp_path.iterdir()) == []
