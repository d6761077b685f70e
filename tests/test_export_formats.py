"""Every format in the registry at every precision it lists: export → reload from disk → run in the
real runtime → parity with PyTorch on real images (digits), through the gates in config/parity.yaml.
Core ML cannot execute on Linux: there the package's spec is validated instead, and the parity case
is skipped with that reason (it runs on macOS)."""

import json
import platform

import pytest
import torch

from edgekd.artifact import FORMATS, load_artifact, make_contract
from edgekd.data import stack
from edgekd.errors import ExportError
from edgekd.export import export
from edgekd.export.parity import check_parity, load_gates
from edgekd.runtimes import can_run_here
from tests.helpers import SHARED_ARCH, shared_export, shared_tiny_model, tiny_export_model

ARCH = SHARED_ARCH
CASES = [(fmt, precision) for fmt in FORMATS.names() for precision in FORMATS.get(fmt).precisions]


def tiny_model():
    return tiny_export_model(ARCH)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits):
    """Artifacts by (format, precision): the session's shared exports of the tiny model (other test
    modules inspect the same files, so each is converted once per session)."""
    artifacts = {
        (fmt, precision): shared_export(tmp_path_factory, fmt, digits.preprocessing, precision)
        for fmt, precision in CASES
    }
    return shared_tiny_model(), artifacts


def test_the_registry_has_every_format_and_precision():
    assert set(FORMATS.names()) == {"tflite", "coreml", "openvino", "onnx"}
    assert ("tflite", "fp16") in CASES and ("openvino", "int8") in CASES and ("coreml", "int8") in CASES
    assert set(load_gates()) == {"fp32", "fp16", "int8"}


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "precision"), CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_export_reload_run_parity(exported, digits, fmt, precision):
    model, artifacts = exported
    artifact = load_artifact(artifacts[fmt, precision].path)  # reloaded from the file and its sidecar
    assert artifact.contract.precision == precision and artifact.format == fmt
    assert artifact.contract.layout == FORMATS.get(fmt).layout
    assert all(path.exists() for path in artifact.files) and artifact.size_bytes > 10_000
    sidecar = json.loads(artifact.sidecar.read_text())
    assert sidecar["contract"]["labels"] == list(digits.preprocessing.labels)
    assert {"edgekd", "torch"} <= set(sidecar["contract"]["versions"])
    if not can_run_here(fmt):
        pytest.skip(f"{fmt} runs only on macOS; its spec was validated when it was exported")
    images, labels = stack(digits.test, limit=128)
    report = check_parity(artifact, model, images, labels)  # raises below the precision's gate
    assert report.samples == 128
    if precision in ("fp32", "fp16"):
        assert report.top1_agreement >= 0.995
        assert report.max_abs_diff < (1e-3 if precision == "fp32" else 5e-2)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS.names())
def test_smaller_precisions_make_smaller_files(exported, fmt):
    _, artifacts = exported
    sizes = {p: artifacts[fmt, p].size_bytes for p in FORMATS.get(fmt).precisions}
    if "fp16" in sizes:
        assert sizes["fp16"] < 0.7 * sizes["fp32"], sizes
    if "int8" in sizes:
        assert sizes["int8"] < 0.45 * sizes["fp32"], sizes


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS.names())
def test_no_temporary_files_are_left_behind(exported, fmt):
    _, artifacts = exported
    directory = artifacts[fmt, "fp32"].path.parent
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_coreml_cannot_run_here_and_says_why(exported):
    from edgekd.errors import RuntimeUnavailableError
    from edgekd.runtimes import open_session

    _, artifacts = exported
    with pytest.raises(RuntimeUnavailableError, match="only on macOS"):
        open_session(artifacts["coreml", "fp32"])


@pytest.mark.slow
def test_an_unsupported_op_is_named_with_its_layer(tmp_path, digits):
    class Histogram(torch.nn.Module):
        def forward(self, x):
            return torch.histc(x, bins=10).unsqueeze(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3)
            self.head = Histogram()

        def forward(self, x):
            return self.head(self.stem(x))

    contract = make_contract("histnet", "tflite", digits.preprocessing)
    with pytest.raises(ExportError, match=r"op aten\.histc\.default in layer head \(Histogram\)") as error:
        export(Net().eval(), "tflite", tmp_path, contract=contract)
    assert "tflite" in str(error.value) and "Traceback" not in str(error.value)


def test_a_contract_in_the_wrong_layout_is_refused(tmp_path, digits):
    contract = make_contract(ARCH, "onnx", digits.preprocessing)
    with pytest.raises(ExportError, match="takes NHWC input, but the contract says NCHW"):
        export(tiny_model(), "tflite", tmp_path, contract=contract)


def test_an_unknown_format_option_lists_the_valid_ones(tmp_path, digits):
    contract = make_contract(ARCH, "onnx", digits.preprocessing)
    with pytest.raises(ExportError, match=r"has no option\(s\) \['deployment_target'\]; its options: opset"):
        export(tiny_model(), "onnx", tmp_path, contract=contract, options={"deployment_target": "iOS16"})
