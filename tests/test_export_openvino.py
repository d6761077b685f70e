import json
from collections import Counter
from dataclasses import asdict

import pytest
import torch
import torch.nn as nn

from edgekd.artifact import Artifact, load_artifact, make_contract
from edgekd.data import stack
from edgekd.errors import ExportError
from edgekd.export import export
from edgekd.export.parity import check_parity
from edgekd.preprocessing import Preprocessing
from tests.helpers import shared_export, shared_tiny_model

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

ARCH = "mobilenetv3_small_050"
PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="module")
def tiny_model():
    return shared_tiny_model()


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    """precision -> Artifact, each exported once per session (test_export_formats reads the same
    IRs), each into its own directory; int8 calibrates on training images, never on the test split."""

    def get(precision: str) -> Artifact:
        return shared_export(tmp_path_factory, "openvino", digits.preprocessing, precision)

    return get


def _read(artifact: Artifact):
    return ov.Core().read_model(str(artifact.path))


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_ir_is_xml_and_bin_with_a_static_named_input(exported, precision):
    artifact = exported(precision)
    assert artifact.path.name == f"student-{precision}.xml"
    assert artifact.path.is_file() and artifact.path.with_suffix(".bin").stat().st_size > 100_000
    ir = _read(artifact)
    (tensor_in,), (tensor_out,) = ir.inputs, ir.outputs
    assert tensor_in.get_any_name() == "image" and artifact.contract.input_name == "image"
    assert tensor_in.get_partial_shape().is_static and list(tensor_in.get_shape()) == [1, 3, 32, 32]
    assert tensor_in.get_element_type() == ov.Type.f32  # every precision keeps float I/O
    assert list(tensor_out.get_shape()) == [1, 10]
    sidecar = json.loads(artifact.sidecar.read_text())
    assert sidecar["format"] == "openvino" and sidecar["file"] == artifact.path.name
    expected_versions = {"edgekd", "torch", "openvino"} | ({"nncf"} if precision == "int8" else set())
    assert set(artifact.contract.versions) == expected_versions
    assert load_artifact(artifact.path).contract == artifact.contract


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_rt_info_carries_the_contract(exported, precision):
    artifact = exported(precision)
    ir = _read(artifact)  # the .xml alone, no sidecar

    def info(key: str) -> str:
        return ir.get_rt_info(["model_info", key]).astype(str)

    embedded = json.loads(info("edgekd_contract"))
    assert embedded == json.loads(json.dumps(asdict(artifact.contract)))
    assert embedded["precision"] == precision and embedded["input_shape"] == [1, 3, 32, 32]
    assert (
        embedded["layout"] == "NCHW"
        and embedded["versions"]["openvino"] == artifact.contract.versions["openvino"]
    )
    assert info("arch") == ARCH and info("precision") == precision and info("layout") == "NCHW"
    assert json.loads(info("labels")) == list(artifact.contract.labels) == [str(i) for i in range(10)]
    assert json.loads(info("mean")) == pytest.approx(artifact.contract.mean)
    assert json.loads(info("std")) == pytest.approx(artifact.contract.std)


# Measured on 64 digits test images (seed 0, 2-core CPU): top-1 agreement 100 % for all three;
# max |logit diff| fp32 1.3e-6, fp16 3.9e-4, int8 4.1e-2; cosine fp32 1.0, fp16 0.9999999, int8 0.9994.
PARITY = {  # precision: (max abs diff, min cosine)
    "fp32": (1e-4, 0.99999),
    "fp16": (5e-3, 0.9999),
    "int8": (0.25, 0.99),
}


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_parity_on_real_images(exported, tiny_model, digits, precision):
    artifact = exported(precision)
    images, labels = stack(digits.test, limit=64)
    report = check_parity(artifact, tiny_model, images, labels)  # raises below the precision's gate
    max_diff, min_cosine = PARITY[precision]
    assert report.samples == 64
    assert report.max_abs_diff < max_diff and report.cosine_similarity > min_cosine


@pytest.mark.slow
def test_fp16_halves_the_weights_and_int8_quarters_them(exported):
    fp32, fp16, int8 = (exported(p).path.with_suffix(".bin").stat().st_size for p in PRECISIONS)
    assert 0.45 < fp16 / fp32 < 0.55  # measured 0.500
    assert int8 / fp32 < 0.35  # measured 0.27: int8 weights, fp32 biases and quantizer ranges


def _op_types(artifact: Artifact) -> Counter:
    return Counter(op.get_type_name() for op in _read(artifact).get_ops())


@pytest.mark.slow
def test_int8_ir_is_quantized(exported):
    ops = _op_types(exported("int8"))
    convolutions = ops["Convolution"] + ops["GroupConvolution"] + ops["MatMul"]
    assert convolutions > 40
    # Activations: FakeQuantize in front of every convolution (and more, at adds and multiplies).
    assert ops["FakeQuantize"] >= convolutions
    int8_weights = [
        op
        for op in _read(exported("int8")).get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
    ]
    assert len(int8_weights) >= convolutions
    assert _op_types(exported("fp32"))["FakeQuantize"] == 0


@pytest.mark.slow
def test_fp16_ir_stores_half_precision_weights(exported):
    ir = _read(exported("fp16"))
    constants = Counter(op.get_element_type() for op in ir.get_ops() if op.get_type_name() == "Constant")
    assert constants[ov.Type.f16] > 40 and constants[ov.Type.f32] < constants[ov.Type.f16]


@pytest.mark.slow
def test_exports_leave_no_temporary_files(exported):
    for precision in PRECISIONS:
        out_dir = exported(precision).path.parent
        expected = {f"student-{precision}{suffix}" for suffix in (".xml", ".bin", ".xml.json")}
        assert {p.name for p in out_dir.iterdir()} == expected


@pytest.mark.slow
def test_a_failed_write_keeps_the_old_ir_and_leaves_nothing_behind(exported, tmp_path, monkeypatch):
    import edgekd.export.openvino as exporter

    ir = _read(exported("fp32"))
    target = tmp_path / "model-fp32.xml"
    target.write_text("old xml")
    target.with_suffix(".bin").write_text("old bin")

    def half_write(model, path, compress_to_fp16):
        path.write_text("<net")  # what a crash in the middle of writing leaves
        raise OSError("disk full")

    monkeypatch.setattr(exporter.ov, "save_model", half_write)
    with pytest.raises(OSError, match="disk full"):
        exporter._save_atomic(ir, target, compress_to_fp16=False)
    assert target.read_text() == "old xml" and target.with_suffix(".bin").read_text() == "old bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-fp32.bin", "model-fp32.xml"]


class Histogram(nn.Module):
    def forward(self, x):
        return torch.histc(x, bins=10)[None]


class HistogramNet(nn.Module):
    """aten::histc has no conversion rule in OpenVINO's PyTorch frontend (2026.4)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.hist = Histogram()

    def forward(self, x):
        return self.hist(self.stem(x))


@pytest.mark.slow
def test_unsupported_op_names_the_op_and_layer(tmp_path):
    contract = make_contract(
        "histogram_net", "openvino", Preprocessing(16, (0.5,) * 3, (0.25,) * 3, tuple("abcdefghij"))
    )
    with pytest.raises(ExportError) as raised:
        export(HistogramNet().eval(), "openvino", tmp_path, contract=contract)
    message = str(raised.value)
    assert "histogram_net could not be converted to openvino" in message
    assert "op aten.histc.default in layer hist (Histogram)" in message
    assert raised.value.__cause__ is not None  # the converter's own error is chained
    assert list(tmp_path.iterdir()) == []


def test_qat_models_export_only_to_tflite(tmp_path):
    from edgekd.export.openvino import export_model

    contract = make_contract(
        "tiny", "openvino", Preprocessing(8, (0.5,) * 3, (0.25,) * 3, ("a", "b")), "int8"
    )
    with pytest.raises(ExportError, match="QAT models export only to tflite"):
        export_model(nn.Conv2d(3, 2, 1), tmp_path / "model-int8.xml", contract, qat=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_non_classifier_output_is_refused(tmp_path):
    contract = make_contract("conv_only", "openvino", Preprocessing(8, (0.5,) * 3, (0.25,) * 3, ("a", "b")))
    with pytest.raises(
        ExportError, match=r"outputs shape \[1,2,8,8\] in OpenVINO, but the contract expects logits"
    ):
        export(nn.Conv2d(3, 2, 1).eval(), "openvino", tmp_path, contract=contract)
    assert list(tmp_path.iterdir()) == []
