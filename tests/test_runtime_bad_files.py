"""Runtime sessions on files their runtime cannot load: one `ExportError` naming the file and its
format, never the runtime's own exception (ValueError, RuntimeError, ONNX Runtime's pybind11 kinds)."""

import pytest

from edgekd.artifact import Artifact, make_contract
from edgekd.errors import ExportError
from edgekd.preprocessing import Preprocessing
from edgekd.runtimes import open_session


@pytest.mark.parametrize(
    "fmt, name, runtime",
    [("tflite", "m.tflite", "litert"), ("onnx", "m.onnx", "onnxruntime"), ("openvino", "m.xml", "openvino")],
)
def test_a_garbage_file_is_one_export_error_naming_it(tmp_path, fmt, name, runtime):
    path = tmp_path / name
    path.write_bytes(b"<garbage/>")
    path.with_suffix(".bin").write_bytes(b"\0" * 8)
    contract = make_contract("m", fmt, Preprocessing(32, (0.5,) * 3, (0.25,) * 3, tuple("01")), "fp32")
    with pytest.raises(ExportError) as failed:
        open_session(Artifact(path, fmt, contract))
    message = str(failed.value)
    assert message.startswith(f"{path} ({fmt}): {runtime} cannot load it (") and "\n" not in message
