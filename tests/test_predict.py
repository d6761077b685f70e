"""`edgekd predict`: exported artifacts classify real image files with their sidecar's preprocessing,
and agree with PyTorch on the same files. Real runtimes (LiteRT, OpenVINO, ONNX Runtime), scikit-learn's
digits rendered as 8x8 greyscale PNGs (resized to the model's 32 px by the contract's bilinear step)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.artifact import Artifact, make_contract, write_sidecar
from edgekd.classify import classify
from edgekd.cli import main
from edgekd.data import SPLIT_SEED, stratified_split
from edgekd.errors import RuntimeUnavailableError
from edgekd.export import export
from tests.helpers import trained_digits_cnn

IMAGES = 20


@pytest.fixture(scope="module")
def trained(digits):
    """A small CNN trained 5 epochs on the digits train split (~99 % test accuracy, a few seconds)."""
    return trained_digits_cnn(digits)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """The first 20 test-split digits as 8x8 greyscale PNG files, and their true classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    _, _, test = stratified_split(digits.target, (0.15, 0.15), SPLIT_SEED)
    folder = tmp_path_factory.mktemp("digit-images")
    files, classes = [], []
    for i in test[:IMAGES]:
        path = folder / f"digit-{i}.png"
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8), "L").save(path)
        files.append(path)
        classes.append(int(digits.target[i]))
    return files, classes


def _torch_probabilities(model, files, preprocessing) -> np.ndarray:
    """PyTorch's probabilities for the files, preprocessed here step by step, independently of
    edgekd.classify: RGB, bilinear resize, / 255, (x - mean) / std, NCHW."""
    size = preprocessing.input_size
    batch = []
    for path in files:
        rgb = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.asarray(rgb, np.float32) / 255.0
        batch.append((pixels - np.array(preprocessing.mean)) / np.array(preprocessing.std))
    images = torch.from_numpy(np.stack(batch).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return torch.softmax(model(images), dim=1).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "openvino", "onnx"])
def test_predict_agrees_with_pytorch_top1_on_20_images(fmt, trained, digits, image_files, tmp_path):
    files, classes = image_files
    contract = make_contract("digits_cnn", fmt, digits.preprocessing)
    artifact = export(trained, fmt, tmp_path, contract=contract)
    predictions = classify(artifact.path, files, top=3)

    expected = _torch_probabilities(trained, files, digits.preprocessing)
    labels = digits.preprocessing.labels
    top1 = [p.top[0][0] for p in predictions]
    assert top1 == [labels[i] for i in expected.argmax(1)]  # all 20
    # The rendered files are what the model was trained on: PyTorch gets nearly all of them right.
    assert sum(label == str(c) for label, c in zip(top1, classes)) >= IMAGES - 1
    for prediction, probs in zip(predictions, expected):
        assert [label for label, _ in prediction.top] == [labels[i] for i in np.argsort(-probs)[:3]]
        assert prediction.top[0][1] == pytest.approx(probs.max(), abs=1e-3)  # softmax of the logits


@pytest.mark.slow
def test_predict_command_prints_top_k_labels_with_probabilities(
    trained, digits, image_files, tmp_path, capsys
):
    files, _ = image_files
    artifact = export(
        trained, "onnx", tmp_path, contract=make_contract("digits_cnn", "onnx", digits.preprocessing)
    )
    assert main(["predict", str(artifact.path), str(files[0]), str(files[1]), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    expected = _torch_probabilities(trained, files[:2], digits.preprocessing)
    for probs in expected:
        best = int(probs.argmax())
        assert f"{100 * probs[best]:.2f}" in printed
    assert printed.splitlines()[0] == str(files[0]) and printed.splitlines()[3] == str(files[1])
    assert len(printed.splitlines()) == 6  # two images, two labels each


def test_core_ml_says_it_cannot_run_on_this_os(tmp_path, digits, capsys):
    package = tmp_path / "student-fp32.mlpackage"
    package.mkdir()
    write_sidecar(Artifact(package, "coreml", make_contract("x", "coreml", digits.preprocessing)))
    image = tmp_path / "one.png"
    Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(RuntimeUnavailableError, match="coreml cannot run on this OS.*only on macOS"):
        classify(package, [image])
    assert main(["predict", str(package), str(image)]) != 0
    assert "only on macOS" in capsys.readouterr().err


def test_a_bad_image_and_a_missing_sidecar_are_named(tmp_path, digits):
    model_file = tmp_path / "student-fp32.onnx"
    model_file.write_bytes(b"not onnx")
    with pytest.raises(Exception, match="sidecar student-fp32.onnx.json is missing"):
        classify(model_file, [tmp_path / "x.png"])
    write_sidecar(Artifact(model_file, "onnx", make_contract("x", "onnx", digits.preprocessing)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"no image here")
    with pytest.raises(Exception, match="broken.png: cannot be decoded as an image"):
        classify(model_file, [broken])
    sidecar = json.loads(model_file.with_name("student-fp32.onnx.json").read_text())
    assert sidecar["input"].startswith("decode as RGB; resize the whole image to 32x32 (bilinear, no crop)")
    assert "raw logits" in sidecar["output"]
