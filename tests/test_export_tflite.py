import json
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn

from edgekd.artifact import FORMATS, Contract, load_artifact
from edgekd.data import stack
from edgekd.errors import ExportError
from edgekd.export import export
from edgekd.export.parity import check_parity
from edgekd.export.tflite import CONTRACT_METADATA, embed_tflite_metadata, read_tflite_metadata
from edgekd.preprocessing import Preprocessing
from edgekd.runtimes import open_session, predict, to_layout
from tests.helpers import (
    shared_digits_cnn_int8,
    shared_export,
    shared_tiny_model,
    shared_trained_digits_cnn,
)


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


def _preprocessing(size):
    return Preprocessing(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), tuple(str(i) for i in range(10)))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """The tiny timm student as fp32 .tflite, converted once per session (test_export_formats and
    test_bundle read the same file)."""
    return shared_tiny_model(), shared_export(tmp_path_factory, "tflite", _preprocessing(32))


@pytest.mark.slow
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


@pytest.mark.slow
def test_parity_gate_fails_a_model_that_disagrees(tiny_export, digits):
    _model, artifact = tiny_export
    other = timm.create_model("mobilenetv3_small_050", num_classes=10).eval()
    images, labels = stack(digits.test, limit=32)
    with pytest.raises(ExportError, match=r"top-1 agreement with PyTorch is .* below the fp32 gate"):
        check_parity(artifact, other, images, labels)


def test_unsupported_precision_names_the_supported_ones(tmp_path):
    model = torch.nn.Conv2d(3, 1, 1)
    with pytest.raises(
        ExportError, match="does not support precision 'int4' yet; supported: fp32, fp16, int8"
    ):
        export(model, "tflite", tmp_path, contract=_contract(8, "int4"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_contract_is_embedded_in_the_flatbuffer(tiny_export):
    _, artifact = tiny_export
    metadata = read_tflite_metadata(artifact.path)
    embedded = json.loads(metadata[CONTRACT_METADATA])
    assert embedded == json.loads(artifact.sidecar.read_text())["contract"]
    assert embedded["input_name"] == "image" and embedded["layout"] == "NHWC"
    assert "min_runtime_version" in metadata  # the converter's own entries are kept
    # The tensors and the signature carry the contract's names, not the converter's "args_0".
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact.path))
    assert interpreter.get_input_details()[0]["name"] == "image"
    assert interpreter.get_output_details()[0]["name"] == embedded["output_name"] == "logits"
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["image"], "outputs": ["logits"]}
    }


@pytest.mark.slow
def test_flatbuffer_buffers_stay_16_byte_aligned(tiny_export):
    # TFLite Micro reads weights in place; the schema asks for force_align 16 on buffer data.
    from ai_edge_litert import schema_py_generated as schema

    _, artifact = tiny_export
    data = artifact.path.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    starts = []
    for i in range(model.BuffersLength()):
        table = model.Buffers(i)._tab
        if model.Buffers(i).DataLength():
            starts.append(table.Vector(table.Offset(4)))
    assert len(starts) > 50 and all(start % 16 == 0 for start in starts)


@pytest.mark.slow
def test_embedding_replaces_an_entry_of_the_same_name(tiny_export, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    _, artifact = tiny_export
    twice = embed_tflite_metadata(artifact.path.read_bytes(), {CONTRACT_METADATA: b"{}", "other": b"x"})
    model = schema.Model.GetRootAs(twice, 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    assert names.count(CONTRACT_METADATA) == 1 and "other" in names
    (tmp_path / "twice.tflite").write_bytes(twice)
    metadata = read_tflite_metadata(tmp_path / "twice.tflite")
    assert metadata[CONTRACT_METADATA] == b"{}" and metadata["other"] == b"x"
    session = open_session(replace(artifact, path=tmp_path / "twice.tflite"))
    session.set_input(np.zeros((1, 32, 32, 3), np.float32))
    session.invoke()  # the rebuilt flatbuffer still runs


class MedianPool(nn.Module):
    """Global median pooling: aten.median.dim, which litert-torch has no lowering for."""

    def forward(self, x):
        return x.flatten(2).median(dim=-1).values


@pytest.mark.slow
def test_unconvertible_op_is_named_with_its_layer(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), MedianPool(), nn.Linear(8, 10)).eval()
    with pytest.raises(ExportError) as raised:
        export(model, "tflite", tmp_path, contract=replace(_contract(16), arch="median_net"))
    message = str(raised.value)
    assert "median_net could not be converted to tflite" in message
    assert "op aten.median.dim in layer 1 (MedianPool)" in message
    assert list(tmp_path.iterdir()) == []


# --- fp16 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    return shared_tiny_model(), shared_export(tmp_path_factory, "tflite", _preprocessing(32), "fp16")


@pytest.mark.slow
def test_fp16_weights_are_float16_with_float32_io(fp16_export, tiny_export):
    from ai_edge_litert.interpreter import Interpreter

    model, artifact = fp16_export
    interpreter = Interpreter(model_path=str(artifact.path))
    (tensor_in,), (tensor_out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert tensor_in["dtype"] == np.float32 and tensor_out["dtype"] == np.float32
    halves = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.float16]
    weights = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )  # BatchNorm folds into these
    assert sum(int(np.prod(t["shape"])) for t in halves) >= 0.98 * weights
    fp32_size = tiny_export[1].size_bytes
    assert 0.45 < artifact.size_bytes / fp32_size < 0.6  # measured 0.54
    contract = load_artifact(artifact.path).contract
    assert contract.precision == "fp16" and contract.io_dtype == "float32"
    assert "ai_edge_quantizer" in contract.versions
    assert json.loads(read_tflite_metadata(artifact.path)[CONTRACT_METADATA])["precision"] == "fp16"
    leftovers = [p for p in artifact.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_fp16_parity_on_real_images(fp16_export, digits):
    # Measured (seed 0, 64 images): top-1 agreement 1.0, max abs diff 3.0e-4, mean 1.0e-4.
    model, artifact = fp16_export
    images, labels = stack(digits.test, limit=64)
    report = check_parity(artifact, model, images, labels)  # raises below the 0.995 fp16 gate
    assert report.top1_agreement >= 0.995
    assert report.cosine_similarity > 0.999


def test_unknown_format_suggests():
    with pytest.raises(Exception, match="Did you mean 'tflite'"):
        FORMATS.get("tflit")


# --- int8 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_cnn(digits):
    """A small CNN trained for 5 epochs on the digits train split (~99 % test accuracy, ~3 s), once
    per session (test_qat fine-tunes a copy of the same model)."""
    return shared_trained_digits_cnn(digits), stack(digits.train)[0]


@pytest.fixture(scope="module")
def int8_export(digits, tmp_path_factory):
    """Its int8 .tflite, calibrated on 200 training images, never on the test split we score on;
    once per session (test_qat compares quantization-aware training with the same file)."""
    return shared_trained_digits_cnn(digits), shared_digits_cnn_int8(tmp_path_factory, digits)


@pytest.mark.slow
def test_int8_accuracy_stays_close_to_fp32(int8_export, digits):
    # Measured (seed 0, 269 test images): fp32 PyTorch 99.6 %, int8 LiteRT 99.6 %, top-1 agreement
    # 100 %; over seeds 0-4 int8 stays within 0.4 points of fp32 (PyTorch and the fp32 .tflite agree
    # exactly), top-1 agreement >= 99.6 %, cosine > 0.9999. The gates leave headroom.
    model, artifact = int8_export
    images, labels = stack(digits.test)
    report = check_parity(artifact, model, images, labels)  # raises below the int8 gates
    assert report.torch_accuracy >= 0.95, "the fixture model did not train"
    assert report.artifact_accuracy >= report.torch_accuracy - 0.02
    assert report.top1_agreement >= 0.98
    assert report.cosine_similarity > 0.999


@pytest.mark.slow
def test_int8_artifact_is_integer_in_and_out_and_says_so(int8_export):
    from ai_edge_litert.interpreter import Interpreter

    _, artifact = int8_export
    interpreter = Interpreter(model_path=str(artifact.path))
    (tensor_in,), (tensor_out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert tensor_in["dtype"] == np.int8 and tensor_out["dtype"] == np.int8
    assert list(tensor_in["shape"]) == [1, 32, 32, 3]  # NHWC kept
    contract = load_artifact(artifact.path).contract
    assert contract.precision == "int8" and contract.io_dtype == "int8"
    assert contract.input_quant == pytest.approx(tensor_in["quantization"])
    assert contract.output_quant == pytest.approx(tensor_out["quantization"])
    assert "torchao" in contract.versions
    sidecar = json.loads(artifact.sidecar.read_text())["contract"]
    assert sidecar["io_dtype"] == "int8" and len(sidecar["input_quant"]) == 2
    assert json.loads(read_tflite_metadata(artifact.path)[CONTRACT_METADATA]) == sidecar
    leftovers = [p for p in artifact.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_int8_session_quantizes_float_input_like_the_contract_says(int8_export, digits):
    from ai_edge_litert.interpreter import Interpreter

    _, artifact = int8_export
    images, _ = stack(digits.test, limit=8)
    nhwc = to_layout(images.numpy(), "NHWC")
    session = open_session(artifact)
    via_session = predict(session, nhwc)
    assert via_session.dtype == np.float32 and via_session.shape == (8, 10)
    # A consumer that follows the contract by hand gets the same logits.
    (in_scale, in_zero), (out_scale, out_zero) = artifact.contract.input_quant, artifact.contract.output_quant
    raw = Interpreter(model_path=str(artifact.path))
    raw.allocate_tensors()
    detail_in, detail_out = raw.get_input_details()[0], raw.get_output_details()[0]
    for sample, expected in zip(nhwc, via_session, strict=True):
        q = np.clip(np.round(sample[None] / in_scale) + in_zero, -128, 127).astype(np.int8)
        raw.set_tensor(detail_in["index"], q)
        raw.invoke()
        logits = (raw.get_tensor(detail_out["index"]).astype(np.float32) - out_zero) * out_scale
        np.testing.assert_allclose(logits[0], expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_int8_needs_enough_calibration_images(trained_cnn, tmp_path):
    model, train_images = trained_cnn
    contract = _contract(32, "int8")
    with pytest.raises(ExportError, match=r"needs calibration images: pass calibration= with at least 200"):
        export(model, "tflite", tmp_path, contract=contract)
    with pytest.raises(ExportError, match=r"^10 calibration images are too few for int8: pass at least 200"):
        export(model, "tflite", tmp_path, contract=contract, calibration=train_images[:10])
    with pytest.raises(ExportError, match=r"too few for int8: pass at least 64"):
        export(
            model, "tflite", tmp_path, contract=contract, calibration=train_images[:10], min_calibration=64
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_calibration_images_are_checked(trained_cnn, tmp_path):
    model, train_images = trained_cnn
    nhwc = train_images[:200].permute(0, 2, 3, 1)
    with pytest.raises(ExportError, match=r"shape \(200, 32, 32, 3\); expected \(N, 3, 32, 32\)"):
        export(model, "tflite", tmp_path, contract=_contract(32, "int8"), calibration=nhwc)
    raw_pixels = (train_images[:200] * 255).to(torch.uint8)
    with pytest.raises(ExportError, match="dtype torch.uint8; pass float images normalised"):
        export(model, "tflite", tmp_path, contract=_contract(32, "int8"), calibration=raw_pixels)
    with pytest.raises(ExportError, match="precision 'fp32' does not use them"):
        export(model, "tflite", tmp_path, contract=_contract(32), calibration=train_images[:200])
    assert list(tmp_path.iterdir()) == []


F = nn.functional


class ActivationZoo(nn.Module):
    """The activations of the catalog's students in one tiny net: ReLU6 (MobileNetV2), hard-swish
    and a squeeze-excite with a hard-sigmoid gate (MobileNetV3, LCNet), SiLU (EfficientNet), GELU,
    a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.se_reduce, self.se_expand = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.pw = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu6(self.stem(x))
        y = F.hardswish(self.dw(x))
        gate = F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        y = F.silu(self.pw(y * gate))
        x = F.gelu(x + y)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


_ZOO: dict = {}


def shared_zoo_int8(tmp_path_factory, digits):
    """`export_zoo_int8`, once per session (test_vela compiles the same file for the Ethos-U)."""
    if "int8" not in _ZOO:
        _ZOO["int8"] = export_zoo_int8(tmp_path_factory.mktemp("zoo"), digits)
    return _ZOO["int8"]


def export_zoo_int8(out, digits):
    torch.manual_seed(0)
    images, _ = stack(digits.train, limit=64)
    contract = replace(_contract(32, "int8"), arch="activation_zoo")
    model = ActivationZoo().eval()
    return model, export(
        model, "tflite", out, contract=contract, stem="zoo", calibration=images, min_calibration=64
    )


@pytest.mark.slow
def test_int8_leaves_no_float_tensor_for_common_activations(digits, tmp_path_factory):
    # The stock litert quantizer leaves the SE mean, hard-sigmoid and SiLU in float; the exporter
    # annotates/decomposes them. Measured: cosine 0.99987, top-1 agreement 100 % on 64 images.
    from ai_edge_litert.interpreter import Interpreter

    model, artifact = shared_zoo_int8(tmp_path_factory, digits)
    interpreter = Interpreter(model_path=str(artifact.path))
    floats = [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32]
    assert floats == []
    images, _ = stack(digits.test, limit=64)
    with torch.no_grad():
        reference = model(images).numpy()
    logits = predict(open_session(artifact), to_layout(images.numpy(), "NHWC"))
    cosine = (reference * logits).sum(1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(logits, axis=1)
    )
    assert cosine.mean() > 0.999
    assert (reference.argmax(1) == logits.argmax(1)).mean() >= 0.95
