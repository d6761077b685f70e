"""Load and run an exported artifact in its real runtime. A session is built once; `invoke` runs the
prepared input and is what the timing protocol measures.

Example:
    >>> # session = open_session(artifact, threads=2)
    >>> # logits = session.predict(images_in_artifact_layout)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgekd._registry import Registry
from edgekd.errors import ExportError

if TYPE_CHECKING:
    from edgekd.export import Artifact


class Session(Protocol):
    runtime: str
    version: str
    threads: int

    def set_input(self, sample: np.ndarray) -> None:
        """One sample with a batch dimension of 1, in the artifact's layout."""

    def invoke(self) -> None: ...

    def output(self) -> np.ndarray: ...


RUNTIMES: Registry[type] = Registry("runtime")


@RUNTIMES.register("litert")
class LiteRTSession:
    """ai-edge-litert's Interpreter (XNNPACK on CPU). A quantized (int8) input is fed float samples
    and quantizes them with the tensor's own scale and zero point; a quantized output is returned
    dequantized, so callers see the same float interface for fp32 and int8 artifacts."""

    runtime = "litert"

    def __init__(self, path: str, threads: int) -> None:
        from importlib.metadata import version

        from ai_edge_litert.interpreter import Interpreter

        self.threads = threads
        self.version = version("ai-edge-litert")
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def set_input(self, sample: np.ndarray) -> None:
        dtype = np.dtype(self._input["dtype"])
        if dtype.kind in "iu" and np.issubdtype(sample.dtype, np.floating):
            sample = quantize(sample, *self._input["quantization"], dtype)
        self._interpreter.set_tensor(self._input["index"], sample.astype(dtype, copy=False))

    def invoke(self) -> None:
        self._interpreter.invoke()

    def output(self) -> np.ndarray:
        value = self._interpreter.get_tensor(self._output["index"])
        if np.dtype(self._output["dtype"]).kind in "iu":
            return dequantize(value, *self._output["quantization"])
        return value.copy()


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Affine quantization as TFLite defines it: clip(round(x / scale) + zero_point)."""
    if scale == 0:
        raise ExportError(
            "the artifact's integer input has no quantization parameters (scale 0), so a float sample "
            "cannot be quantized; feed it integer samples or re-export with a quantized input."
        )
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """(q - zero_point) * scale as float32; an integer tensor without parameters is returned as is."""
    if scale == 0:
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)


def open_session(artifact: Artifact, threads: int = 1) -> Session:
    from edgekd.export import FORMATS

    return RUNTIMES.get(FORMATS.get(artifact.format).runtime)(str(artifact.path), threads)


def predict(session: Session, samples: np.ndarray) -> np.ndarray:
    """Run samples (N, ...) one at a time through a batch-1 session; return stacked outputs."""
    outputs = []
    for sample in samples:
        session.set_input(sample[None])
        session.invoke()
        outputs.append(session.output()[0])
    return np.stack(outputs)


def to_layout(images_nchw: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(images_nchw.transpose(0, 2, 3, 1)) if layout == "NHWC" else images_nchw
