"""The app bundles: `exports/android/` (a .tflite with standard TFLite Metadata read back with the
schema's own generated reader, labels.txt, a Kotlin README) and `exports/ios/` (a Core ML classifier,
checked from its spec: Core ML cannot run on Linux). Real converters, a tiny model, digits labels."""

import io
import json
import zipfile
from dataclasses import replace

import coremltools as ct
import numpy as np
import pytest

from edgekd.artifact import Artifact, make_contract
from edgekd.checkpoint import ModelInfo, save_model
from edgekd.cli import main
from edgekd.errors import ExportError
from edgekd.export import _tflite_metadata_schema as schema
from edgekd.export.bundle import android_bundle, check_platforms, ios_bundle
from edgekd.export.coreml_classifier import check_classifier, classifier_labels
from edgekd.export.tflite import read_tflite_metadata
from edgekd.export.tflite_metadata import read_standard_metadata
from edgekd.runtimes import open_session
from tests.helpers import shared_export
from tests.test_export_formats import ARCH, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def android(digits, tmp_path_factory):
    """The tiny model's fp32 .tflite (converted once per session, test_export_formats reads it too)
    and the Android bundle made from it."""
    tflite = shared_export(tmp_path_factory, "tflite", digits.preprocessing)
    return tflite, android_bundle(tflite, tmp_path_factory.mktemp("exports") / "android")


@pytest.mark.slow
def test_android_tflite_carries_standard_metadata(android, digits):
    _, bundle = android
    p = digits.preprocessing
    # Read with the schema's generated table API directly, apart from edgekd's own reader.
    buffer = read_tflite_metadata(bundle.model)["TFLITE_METADATA"]
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    graph = schema.ModelMetadata.GetRootAs(buffer, 0).SubgraphMetadata(0)
    image, logits = graph.InputTensorMetadata(0), graph.OutputTensorMetadata(0)
    assert (image.Name(), logits.Name()) == (b"image", b"logits")
    options = image.ProcessUnits(0).Options()
    normalisation = schema.NormalizationOptions()
    normalisation.Init(options.Bytes, options.Pos)
    # TFLite Metadata normalises the [0, 255] pixels an app feeds: edgekd's mean/std times 255.
    np.testing.assert_allclose(normalisation.MeanAsNumpy(), np.array(p.mean) * 255, rtol=1e-6)
    np.testing.assert_allclose(normalisation.StdAsNumpy(), np.array(p.std) * 255, rtol=1e-6)
    label_file = logits.AssociatedFiles(0)
    assert label_file.Name() == b"labels.txt"
    assert label_file.Type() == schema.AssociatedFileType.TENSOR_AXIS_LABELS
    with zipfile.ZipFile(io.BytesIO(bundle.model.read_bytes())) as packed:
        assert packed.read("labels.txt").decode().splitlines() == list(p.labels)
        assert packed.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED  # mmap-able on a phone

    found = read_standard_metadata(bundle.model)
    assert found.labels == p.labels and found.color_space == "RGB" and found.min_parser_version == "1.0.0"
    assert (found.input_name, found.output_name) == ("image", "logits")
    assert "bilinear, no crop" in found.input_description and "raw logits" in found.output_description


@pytest.mark.slow
def test_android_bundle_runs_like_the_export_and_documents_itself(android, digits):
    tflite, bundle = android
    assert sorted(p.name for p in bundle.directory.iterdir()) == sorted(
        [bundle.model.name, f"{bundle.model.name}.json", "labels.txt", "README.md"]
    )
    sample = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    outputs = []
    for artifact in (tflite, Artifact(bundle.model, "tflite", tflite.contract)):
        session = open_session(artifact)
        session.set_input(sample)
        session.invoke()
        outputs.append(session.output())
    np.testing.assert_array_equal(outputs[0], outputs[1])  # the metadata changes nothing computed
    assert (bundle.directory / "labels.txt").read_text().splitlines() == list(digits.preprocessing.labels)
    readme = (bundle.directory / "README.md").read_text()
    assert "```kotlin" in readme and f'openFd("{bundle.model.name}")' in readme
    assert "floatArrayOf(0.485f, 0.456f, 0.406f)" in readme and "WIDTH = 32" in readme
    sidecar = json.loads((bundle.directory / f"{bundle.model.name}.json").read_text())
    assert (
        sidecar["contract"]["normalisation"] == "consumer" and sidecar["contract"]["output_kind"] == "logits"
    )


@pytest.mark.slow
def test_ios_bundle_is_a_classifier_with_the_datasets_labels(model, digits, tmp_path):
    bundle = ios_bundle(model, ARCH, digits.preprocessing, tmp_path / "ios", stem="student")
    spec = ct.utils.load_spec(str(bundle.model))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "probabilities"
    assert classifier_labels(spec) == digits.preprocessing.labels
    image = spec.description.input[0]
    assert image.name == "image" and image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (32, 32)
    outputs = {o.name: o.type.WhichOneof("Type") for o in spec.description.output}
    assert outputs == {"classLabel": "stringType", "probabilities": "dictionaryType"}

    sidecar = json.loads(bundle.model.with_name(bundle.model.name + ".json").read_text())
    # The package normalises: the sidecar says so, so nobody normalises twice.
    assert sidecar["contract"]["normalisation"] == "model" and "Do NOT normalise" in sidecar["input"]
    assert sidecar["contract"]["output_kind"] == "probabilities"
    readme = (bundle.directory / "README.md").read_text()
    assert "```swift" in readme and "student_fp32(configuration:" in readme and ".scaleFill" in readme
    contract = make_contract(ARCH, "coreml", digits.preprocessing)
    assert check_classifier(bundle.model, contract) == []
    other = replace(contract, labels=tuple("abcdefghij"))
    assert any(p.startswith("classifier: class labels") for p in check_classifier(bundle.model, other))


def test_an_unknown_platform_is_refused_and_repeats_are_dropped():
    with pytest.raises(ExportError, match="--bundle windows: no such platform; choose from android, ios"):
        check_platforms(["android", "windows"])
    assert check_platforms(["ios", "android", "ios"]) == ["ios", "android"]


@pytest.mark.slow
def test_export_command_writes_both_bundles(model, digits, tmp_path, capsys):
    checkpoint = tmp_path / "student.safetensors"
    save_model(checkpoint, model, ModelInfo(ARCH, digits.preprocessing))
    out = tmp_path / "exports"
    args = ["export", str(checkpoint), "--format", "onnx", "--out", str(out), "--no-latency"]
    assert main([*args, "--parity-images", "32", "--bundle", "android", "--bundle", "ios"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "exports.json").read_text())["rows"]
    # --bundle android adds the tflite fp32 export it carries, parity-checked like the others.
    assert [(r["format"], r["precision"], r["status"]) for r in rows] == [
        ("pytorch", "fp32", "reference"),
        ("onnx", "fp32", "ok"),
        ("tflite", "fp32", "ok"),
    ]
    assert (
        read_standard_metadata(out / "android" / "student-fp32.tflite").labels == digits.preprocessing.labels
    )
    assert (out / "ios" / "student-fp32.mlpackage" / "Manifest.json").is_file()
    assert "android bundle:" in printed and "ios bundle:" in printed


def test_fit_bundles_each_platform_its_targets_serve():
    from edgekd.fit_shipping import bundle_stages
    from edgekd.targets import get_target

    targets = [get_target(name) for name in ("ethos-u55", "pi5", "pi4", "apple-ane")]
    # ethos-u55 ships int8 for an NPU: the Android bundle comes from the first float TFLite target.
    assert [(s.platform, s.target.name) for s in bundle_stages(targets)] == [
        ("android", "pi5"),
        ("ios", "apple-ane"),
    ]
    assert bundle_stages([get_target("ethos-u55"), get_target("intel-cpu")]) == []
