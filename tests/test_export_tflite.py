import json

import numpy as np
import pytest
import timm
import torch

from edgekd.data import stack
from edgekd.errors import ExportError
from edgekd.export import FORMATS, Contract, export, load_artifact
from edgekd.export.parity import check_parity
from edgekd.runtimes import open_session


def _contract(size, precision="fp32"):
    return Contract(
        arch="mobilenetv3_small_050",
        input_name="input",
        input_shape=(1, size, size, 3),
        layout="NHWC",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        labels=tuple(str(i) for i in range(10)),
        precision=precision,
    )


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", num_classes=10).eval()
    # Non-trivial BatchNorm statistics, so the converter cannot fold branches to zero.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("export")
    return model, export(model, "tflite", out, contract=_contract(32), stem="tiny")


def test_tflite_parity_on_real_images(tiny_export, digits):
    model, artifact = tiny_export
    images, labels = stack(digits.test, limit=64)
    report = check_parity(artifact, model, images, labels)
    assert report.samples == 64
    assert report.top1_agreement >= 0.995
    assert report.max_abs_diff < 1e-3 and report.cosine_similarity > 0.9999


def test_artifact_is_nhwc_and_carries_its_contract(tiny_export):
    _, artifact = tiny_export
    assert artifact.path.suffix == ".tflite" and artifact.size_bytes > 10_000
    session = open_session(artifact)
    session.set_input(np.zeros((1, 32, 32, 3), np.float32))
    session.invoke()
    assert session.output().shape == (1, 10)
    sidecar = json.loads(artifact.sidecar.read_text())
    assert sidecar["format"] == "tflite" and sidecar["file"] == artifact.path.name
    contract = sidecar["contract"]
    assert contract["layout"] == "NHWC" and contract["input_shape"] == [1, 32, 32, 3]
    assert contract["arch"] == "mobilenetv3_small_050" and len(contract["labels"]) == 10
    assert {"edgekd", "torch", "litert_torch"} <= set(contract["versions"])
    assert load_artifact(artifact.path).contract.input_shape == (1, 32, 32, 3)
    leftovers = [p for p in artifact.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_parity_gate_fails_a_model_that_disagrees(tiny_export, digits):
    _model, artifact = tiny_export
    other = timm.create_model("mobilenetv3_small_050", num_classes=10).eval()
    images, labels = stack(digits.test, limit=32)
    with pytest.raises(ExportError, match=r"top-1 agreement with PyTorch is .* below the fp32 gate"):
        check_parity(artifact, other, images, labels)


def test_unsupported_precision_names_the_supported_ones(tmp_path):
    model = torch.nn.Conv2d(3, 1, 1)
    with pytest.raises(ExportError, match="does not support precision 'int8' yet; supported: fp32"):
        export(model, "tflite", tmp_path, contract=_contract(8, "int8"))
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_suggests():
    with pytest.raises(Exception, match="Did you mean 'tflite'"):
        FORMATS.get("tflit")
