"""Core ML export. coremltools converts and writes packages on Linux but predicts only on macOS, so
here every package is checked from its spec (`validate_package`) and the baked-in normalisation is
checked numerically in PyTorch; parity through Core ML itself runs on a Mac."""

import json
import platform
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ct = pytest.importorskip("coremltools")
timm = pytest.importorskip("timm")

from edgekd.artifact import load_artifact, make_contract  # noqa: E402
from edgekd.data import stack  # noqa: E402
from edgekd.errors import ExportError, RuntimeUnavailableError  # noqa: E402
from edgekd.export import coreml  # noqa: E402
from edgekd.export.coreml_package import validate_package  # noqa: E402
from edgekd.export.parity import check_parity  # noqa: E402
from edgekd.preprocessing import Preprocessing  # noqa: E402
from edgekd.runtimes import open_session, prepare_input  # noqa: E402
from tests.helpers import SHARED_ARCH, digits_cnn, shared_export, shared_tiny_model  # noqa: E402

ARCH = SHARED_ARCH
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LABELS = tuple(str(i) for i in range(10))
# (precision, weight_quantization): every kind of package the exporter writes.
KINDS = {
    "fp32": ("fp32", "linear"),
    "fp16": ("fp16", "linear"),
    "int8-linear": ("int8", "linear"),
    "int8-palettize": ("int8", "palettize"),
}
ON_MAC = platform.system() == "Darwin"


def _preprocessing(size=32, labels=LABELS):
    return Preprocessing(size, MEAN, STD, labels)


def _contract(precision="fp32", size=32, labels=LABELS):
    return make_contract(ARCH, "coreml", _preprocessing(size, labels), precision)


def _weights_bytes(package: Path) -> int:
    return (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").stat().st_size


def _spec_path(package: Path) -> Path:
    return package / "Data" / "com.apple.CoreML" / "model.mlmodel"


@pytest.fixture(scope="module")
def tiny_model():
    return shared_tiny_model()


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Each kind exported through edgekd.export.export, once per session (test_export_formats and
    test_bundle read the same packages), each into its own directory."""
    artifacts = {}
    for kind, (precision, weight_quantization) in KINDS.items():
        # "linear" is the exporter's default: leaving it out shares the package other modules export.
        options = None if weight_quantization == "linear" else {"weight_quantization": weight_quantization}
        artifacts[kind] = shared_export(tmp_path_factory, "coreml", _preprocessing(), precision, options)
    return artifacts


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_package_validates_and_carries_its_contract(packages, kind):
    artifact = packages[kind]
    precision = KINDS[kind][0]
    assert artifact.path.name == f"student-{precision}.mlpackage"
    assert artifact.path.is_dir() and (artifact.path / "Manifest.json").is_file()
    report = validate_package(artifact.path, artifact.contract)
    assert report.ok, report.problems
    assert report.deployment_target == "iOS16" and report.spec_version == 7
    assert report.ops["conv"] > 10 and "custom" not in " ".join(report.ops)

    sidecar = json.loads(artifact.sidecar.read_text())
    assert sidecar["format"] == "coreml" and sidecar["file"] == artifact.path.name
    assert sidecar["contract"]["input_kind"] == "image"
    assert sidecar["contract"]["layout"] == "NCHW" and sidecar["contract"]["input_shape"] == [1, 3, 32, 32]
    assert {"edgekd", "torch", "coremltools"} <= set(sidecar["contract"]["versions"])
    assert load_artifact(artifact.path).contract == artifact.contract

    spec = ct.utils.load_spec(str(artifact.path))
    meta = spec.description.metadata
    assert meta.author == "edgekd" and ARCH in meta.shortDescription and meta.versionString
    user = dict(meta.userDefined)
    assert json.loads(user["edgekd.contract"]) == json.loads(json.dumps(asdict(artifact.contract)))
    assert tuple(json.loads(user["edgekd.labels"])) == LABELS
    assert tuple(json.loads(user["edgekd.mean"])) == MEAN and tuple(json.loads(user["edgekd.std"])) == STD
    assert user["edgekd.precision"] == precision and user["edgekd.deployment_target"] == "iOS16"
    assert spec.WhichOneof("Type") == "mlProgram" and not spec.description.predictedFeatureName
    image = spec.description.input[0]
    assert image.name == "image" and (image.type.imageType.width, image.type.imageType.height) == (32, 32)
    logits = spec.description.output[0]
    assert logits.name == "logits" and list(logits.type.multiArrayType.shape) == [1, 10]

    leftovers = [p.name for p in artifact.path.parent.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []
    assert not (artifact.path / "executorch_debug_handle_mapping.json").exists()


@pytest.mark.slow
def test_weights_shrink_with_precision(packages):
    size = {kind: _weights_bytes(artifact.path) for kind, artifact in packages.items()}
    assert 0.45 < size["fp16"] / size["fp32"] < 0.55
    for kind in ("int8-linear", "int8-palettize"):
        assert 0.2 < size[kind] / size["fp32"] < 0.3, (kind, size)


@pytest.mark.slow
def test_int8_weights_are_compressed_ops(packages):
    fp16 = validate_package(packages["fp16"].path, packages["fp16"].contract).ops
    linear = validate_package(packages["int8-linear"].path, packages["int8-linear"].contract).ops
    lut = validate_package(packages["int8-palettize"].path, packages["int8-palettize"].contract).ops
    assert not any(op.startswith("constexpr_") for op in fp16)
    assert linear["constexpr_affine_dequantize"] > 10 and "constexpr_lut_to_dense" not in linear
    assert lut["constexpr_lut_to_dense"] > 10 and "constexpr_affine_dequantize" not in lut
    assert linear["conv"] == lut["conv"] == fp16["conv"]


def test_baked_normalisation_matches_the_model(tiny_model, digits):
    """Core ML feeds the program pixels / 255; ImageInput must turn that into the model's input."""
    images, _ = stack(digits.test, limit=16)
    pixels = prepare_input(images.numpy(), replace(_contract(), input_kind="image"))
    assert pixels.min() >= -1e-4 and pixels.max() <= 255 + 1e-3
    wrapped = coreml.ImageInput(tiny_model, MEAN, STD).eval()
    with torch.no_grad():
        expected = tiny_model(images)
        got = wrapped(torch.from_numpy(pixels) / 255)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_newer_deployment_target_uses_its_ops(tmp_path):
    # The ops depend on the target, not on the model: a small CNN whose convolutions and linear
    # layer are above WEIGHT_THRESHOLD (so they are compressed) converts in a fraction of the time.
    torch.manual_seed(0)
    contract = coreml.export_model(
        digits_cnn().eval(), tmp_path / "m.mlpackage", _contract("int8"), deployment_target="iOS18"
    )
    report = validate_package(tmp_path / "m.mlpackage", contract)
    assert report.ok, report.problems
    assert report.deployment_target == "iOS18" and "constexpr_blockwise_shift_scale" in report.ops


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ios16", r"unknown Core ML deployment target 'ios16'.*iOS15, iOS16, iOS17.*Did you mean 'iOS16'"),
        ("iOS13", r"unknown Core ML deployment target 'iOS13': an ML Program needs one of iOS15"),
    ],
)
def test_unknown_deployment_target_lists_the_valid_ones(tmp_path, target, message):
    with pytest.raises(ExportError, match=message):
        coreml.export_model(
            nn.Conv2d(3, 1, 1), tmp_path / "m.mlpackage", _contract(), deployment_target=target
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"deployment_target": "iOS15"}, r"'int8' needs compressed-weight ops.*'iOS15'"),
        ({"weight_quantization": "kmeans"}, r"unknown weight_quantization 'kmeans'.*'linear' or 'palettize'"),
        ({"calibration": torch.zeros(1, 3, 32, 32)}, "uses no calibration images"),
        ({"qat": True}, "quantization-aware"),
    ],
)
def test_refused_options_say_why(tmp_path, options, message):
    with pytest.raises(ExportError, match=message):
        coreml.export_model(nn.Conv2d(3, 1, 1), tmp_path / "m.mlpackage", _contract("int8"), **options)
    assert list(tmp_path.iterdir()) == []


def _tamper_metadata(spec):
    meta = spec.description.metadata.userDefined
    stored = json.loads(meta["edgekd.contract"])
    meta["edgekd.contract"] = json.dumps({**stored, "arch": "resnet18"})


def _tamper_op(spec):
    function = spec.mlProgram.functions["main"]
    op = next(op for op in function.block_specializations[function.opset].operations if op.type == "relu")
    op.type = "my_custom_relu"


def _tamper_input(spec):
    spec.description.input[0].type.imageType.colorSpace = ct.proto.FeatureTypes_pb2.ImageFeatureType.BGR


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tamper", "check", "message"),
    [
        (_tamper_metadata, "metadata", "differs from the expected one in arch"),
        (_tamper_op, "ops", "'my_custom_relu' is not a core MIL op"),
        (_tamper_input, "input", "color space is BGR, expected RGB"),
    ],
)
def test_tampered_package_fails_the_check_it_breaks(packages, tmp_path, tamper, check, message):
    package = shutil.copytree(packages["fp16"].path, tmp_path / "tampered.mlpackage")
    spec = ct.utils.load_spec(str(package))
    tamper(spec)
    _spec_path(package).write_bytes(spec.SerializeToString())
    report = validate_package(package, packages["fp16"].contract)
    assert not report.ok
    assert any(p.startswith(f"{check}: ") and message in p for p in report.problems), report.problems


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "checks"),
    [
        ({"precision": "fp32"}, {"precision", "metadata"}),
        ({"input_shape": (1, 3, 64, 64)}, {"input", "metadata"}),
        ({"labels": ("a", "b")}, {"output", "metadata"}),
    ],
)
def test_package_is_checked_against_the_contract(packages, change, checks):
    artifact = packages["fp16"]
    report = validate_package(artifact.path, replace(artifact.contract, **change))
    assert {p.split(":")[0] for p in report.problems} == checks, report.problems


@pytest.mark.slow
def test_fp16_package_is_not_an_int8_one(packages):
    artifact = packages["fp16"]
    report = validate_package(artifact.path, replace(artifact.contract, precision="int8"))
    assert any("int8 has no" in p and p.startswith("precision: ") for p in report.problems), report.problems


def test_unreadable_package_is_reported(tmp_path):
    (tmp_path / "broken.mlpackage").mkdir()
    report = validate_package(tmp_path / "broken.mlpackage", _contract())
    assert len(report.problems) == 1 and report.problems[0].startswith("package: ")


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    ).eval()


@pytest.mark.slow
def test_export_replaces_an_older_package_and_nothing_else(tmp_path):
    path = tmp_path / "m.mlpackage"
    coreml.export_model(_small_cnn(), path, _contract())
    second = coreml.export_model(_small_cnn(), path, _contract(labels=tuple("abcdefghij")))
    assert validate_package(path, second).ok
    assert json.loads(
        dict(ct.utils.load_spec(str(path)).description.metadata.userDefined)["edgekd.labels"]
    ) == list("abcdefghij")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]

    other = tmp_path / "not-a-package.mlpackage"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not a Core ML package .* was not overwritten"):
        coreml.export_model(_small_cnn(), other, _contract())
    assert (other / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage", "not-a-package.mlpackage"]


@pytest.mark.slow
def test_a_package_that_fails_validation_is_not_published(tmp_path, monkeypatch):
    path = tmp_path / "m.mlpackage"
    first = coreml.export_model(_small_cnn(), path, _contract())
    failing = replace(validate_package(path, first), problems=("ops: 'x' is not a core MIL op.",))
    monkeypatch.setattr(coreml, "validate_package", lambda *a, **k: failing)
    with pytest.raises(ExportError, match=r"m\.mlpackage: the Core ML package .* fails validation:\n  ops: "):
        coreml.export_model(_small_cnn(), path, _contract(labels=tuple("abcdefghij")))
    monkeypatch.undo()
    assert validate_package(path, first).ok  # the older package is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


class _Erfinv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3)

    def forward(self, x):
        return torch.special.erfinv(self.conv(x).tanh() * 0.5).mean((2, 3))


def test_conversion_failure_names_the_op_and_layer(tmp_path):
    model = nn.Sequential(_Erfinv()).eval()
    with pytest.raises(ExportError, match=r"could not be converted to coreml.*erfinv") as info:
        coreml.export_model(model, tmp_path / "m.mlpackage", _contract())
    assert isinstance(info.value.__cause__, Exception)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(ON_MAC, reason="Core ML predicts on macOS")
def test_core_ml_session_is_unavailable_off_macos(packages):
    with pytest.raises(RuntimeUnavailableError, match="only on macOS"):
        open_session(packages["fp16"])


@pytest.mark.slow
@pytest.mark.skipif(not ON_MAC, reason="Core ML predicts only on macOS")
@pytest.mark.parametrize("kind", list(KINDS))
def test_core_ml_parity_on_real_images(packages, tiny_model, digits, kind):
    images, labels = stack(digits.test, limit=64)
    # CoreMLSession feeds 8-bit pixels: give it images whose pixels are whole numbers already, so
    # the comparison measures the package, not the rounding of the input.
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
    images = (((images * std + mean) * 255).round().clamp(0, 255) / 255 - mean) / std
    # An untrained model's top classes are close, so fp16/int8 are held to agreement, not the gate.
    report = check_parity(packages[kind], tiny_model, images, labels, gate=KINDS[kind][0] == "fp32")
    assert report.samples == 64
    assert report.top1_agreement >= {"fp32": 0.995, "fp16": 0.95, "int8": 0.85}[KINDS[kind][0]]
    assert report.cosine_similarity > (0.9999 if KINDS[kind][0] == "fp32" else 0.99)
