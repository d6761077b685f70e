import json

import numpy as np
import onnx
import pytest
import torch.nn as nn

from edgekd.artifact import load_artifact, make_contract
from edgekd.errors import ExportError
from edgekd.export import export
from edgekd.export.onnx import export_model, read_onnx_metadata, supported_opsets
from edgekd.preprocessing import Preprocessing
from edgekd.runtimes import open_session
from tests.helpers import shared_export, shared_tiny_model

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LABELS = tuple(str(i) for i in range(10))


def _contract(arch="mobilenetv3_small_050", size=32):
    return make_contract(arch, "onnx", Preprocessing(size, MEAN, STD, LABELS))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """The tiny timm student as .onnx, converted once per session (test_export_formats reads it too)."""
    return shared_tiny_model(), shared_export(tmp_path_factory, "onnx", Preprocessing(32, MEAN, STD, LABELS))


@pytest.mark.slow
def test_onnx_file_is_valid_single_and_nchw(tiny_onnx):
    _, artifact = tiny_onnx
    assert artifact.path.suffix == ".onnx" and artifact.size_bytes > 100_000
    onnx.checker.check_model(str(artifact.path), full_check=True)
    model = onnx.load(str(artifact.path), load_external_data=False)
    # Every initializer inline: no tensor points at an external .data file.
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]
    assert model.opset_import[0].version == 18
    files = sorted(p.name for p in artifact.path.parent.iterdir())
    assert files == ["student-fp32.onnx", "student-fp32.onnx.json"]  # no .data, no leftover .tmp
    session = open_session(artifact)
    session.set_input(np.zeros((1, 3, 32, 32), np.float32))
    session.invoke()
    assert session.output().shape == (1, 10)


@pytest.mark.slow
def test_onnx_metadata_round_trips(tiny_onnx):
    _, artifact = tiny_onnx
    model = onnx.load(str(artifact.path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    assert props == read_onnx_metadata(artifact.path)
    assert json.loads(props["labels"]) == list(LABELS)
    assert json.loads(props["mean"]) == list(MEAN) and json.loads(props["std"]) == list(STD)
    assert props["precision"] == "fp32"
    embedded = json.loads(props["edgekd.contract"])
    sidecar = json.loads(artifact.sidecar.read_text())
    assert sidecar["format"] == "onnx" and embedded == sidecar["contract"]
    assert {"edgekd", "torch", "onnx", "onnxruntime"} <= set(embedded["versions"])
    assert embedded["layout"] == "NCHW" and embedded["input_shape"] == [1, 3, 32, 32]
    assert model.producer_name == "edgekd" and "mobilenetv3_small_050" in model.doc_string
    assert load_artifact(artifact.path).contract == artifact.contract


@pytest.mark.parametrize("opset", [12, supported_opsets().stop])
def test_unsupported_opset_names_the_range(opset, tmp_path):
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(
        ExportError, match=rf"opset {opset} is not supported; choose an opset from 13 to {newest}"
    ):
        export_model(nn.Conv2d(3, 1, 1), tmp_path / "m.onnx", _contract("conv", 8), opset=opset)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_older_opset_is_written_or_refused(tmp_path):
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()).eval()
    export_model(plain, tmp_path / "plain.onnx", _contract("plain", 8), opset=17)
    assert onnx.load(str(tmp_path / "plain.onnx")).opset_import[0].version == 17
    # ReduceMean changed in opset 18 and the exporter's converter cannot take it back; it would
    # keep opset 18 with a warning. The exporter refuses instead of shipping another opset.
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(ExportError, match=r"produced ONNX opset 18, not the requested 17.*opset 18 or newer"):
        export_model(pooled, tmp_path / "pooled.onnx", _contract("pooled", 8), opset=17)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


class MedianPool(nn.Module):
    """Global median pooling: aten.median.dim, which the dynamo exporter has no ONNX function for."""

    def forward(self, x):
        return x.flatten(2).median(dim=-1).values


class MedianNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.head = nn.Sequential(MedianPool(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.stem(x))


@pytest.mark.slow
def test_unconvertible_op_is_named_with_its_layer(tmp_path):
    with pytest.raises(ExportError) as raised:
        export(MedianNet().eval(), "onnx", tmp_path, contract=_contract("median_net", 16))
    message = str(raised.value)
    assert "median_net could not be converted to onnx" in message
    assert "op aten.median.dim in layer head.0 (MedianPool)" in message
    assert "conv2d" not in message  # the failing node's arguments are not blamed
    assert raised.value.__cause__ is not None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_checker_failure_names_the_file(tmp_path, monkeypatch):
    def reject(path, full_check=False):
        raise onnx.checker.ValidationError("Nodes in a graph must be topologically sorted")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()).eval()
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"bad\.onnx: the exported model fails the ONNX checker: Nodes in"):
        export_model(model, path, _contract("conv", 8))
    assert list(tmp_path.iterdir()) == []


def test_onnx_refuses_other_precisions(tmp_path):
    from dataclasses import replace

    with pytest.raises(ExportError, match="does not support precision 'int8' yet; supported: fp32"):
        export(nn.Conv2d(3, 1, 1), "onnx", tmp_path, contract=replace(_contract("conv", 8), precision="int8"))
    assert list(tmp_path.iterdir()) == []
