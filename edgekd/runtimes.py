"""Load and run an exported artifact in its real runtime, to check what it computes (parity with
PyTorch, predictions). A session is built once; `invoke` runs the prepared input. Timing is not done
here: every artifact is timed through `edgekd.bench`, the script a device runs, so that a file is
compiled the same way wherever it is timed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgekd._registry import Registry
from edgekd.errors import EdgeKDError, ExportError, RuntimeUnavailableError

if TYPE_CHECKING:
    from edgekd.artifact import Artifact


class Session(Protocol):
    # The operating system (`platform.system()`) the runtime exists on; None: any.
    only_on: str | None

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

    only_on = None

    def __init__(self, path: str, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

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


@RUNTIMES.register("openvino")
class OpenVINOSession:
    """OpenVINO's CPU plugin with a model compiled once, for parity, not timing (`edgekd.bench` times
    the plugin's default, as a deployed app runs it). `INFERENCE_PRECISION_HINT` f32 makes the plugin
    compute in fp32 on every CPU, where its default picks a smaller float type on CPUs that have one
    natively (bf16 with AVX512_BF16 or AMX) and fp32 elsewhere: the parity gate then judges the IR's
    own precision (FP16 IR weights decompressed to fp32, INT8 IR on integer kernels), and an export
    passes or fails it alike on every host that checks it."""

    only_on = None

    def __init__(self, path: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            str(path),
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1},
        )
        self._request = compiled.create_infer_request()
        self._tensor = ov.Tensor

    def set_input(self, sample: np.ndarray) -> None:
        self._request.set_input_tensor(self._tensor(np.ascontiguousarray(sample, dtype=np.float32)))

    def invoke(self) -> None:
        self._request.infer()

    def output(self) -> np.ndarray:
        return self._request.get_output_tensor(0).data.copy()


@RUNTIMES.register("onnxruntime")
class OnnxRuntimeSession:
    """ONNX Runtime's CPU execution provider, one session with `threads` intra-op threads and all
    graph optimisations on (the default a deployed ORT app gets)."""

    only_on = None

    def __init__(self, path: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        self._feed: dict[str, np.ndarray] = {}
        self._result: np.ndarray | None = None

    def set_input(self, sample: np.ndarray) -> None:
        self._feed = {self._input_name: np.ascontiguousarray(sample, dtype=np.float32)}

    def invoke(self) -> None:
        self._result = self._session.run(None, self._feed)[0]

    def output(self) -> np.ndarray:
        if self._result is None:
            raise ExportError("output() was called before invoke().")
        return self._result


@RUNTIMES.register("coreml")
class CoreMLSession:
    """Core ML's own runtime, which exists only on macOS: coremltools loads the .mlpackage and
    predicts with the requested compute units. On Linux this raises RuntimeUnavailableError, and
    callers validate the package's spec instead (edgekd.export.coreml_package.validate_package)."""

    only_on = "Darwin"

    def __init__(self, path: str, threads: int, compute_units: str = "ALL") -> None:
        import platform

        if not available_here(type(self)):
            raise RuntimeUnavailableError(
                f"{path}: Core ML models run only on macOS (this is {platform.system()}); validate the "
                "package's spec here, or profile it on a Mac (edgekd profile --device ssh://mac)."
            )
        import coremltools as ct

        self._model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        spec = self._model.get_spec()
        first = spec.description.input[0]
        self._input_name, self._image_input = first.name, first.type.WhichOneof("Type") == "imageType"
        self._output_name = spec.description.output[0].name
        self._feed: dict = {}
        self._result: np.ndarray | None = None

    def set_input(self, sample: np.ndarray) -> None:
        """`sample`: (1, 3, H, W); for an image input, RGB pixels in [0, 255] (see `prepare_input`)."""
        if self._image_input:
            from PIL import Image

            pixels = np.clip(np.round(sample[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
            self._feed = {self._input_name: Image.fromarray(pixels, "RGB")}
        else:
            self._feed = {self._input_name: sample.astype(np.float32)}

    def invoke(self) -> None:
        self._result = np.asarray(self._model.predict(self._feed)[self._output_name])

    def output(self) -> np.ndarray:
        if self._result is None:
            raise ExportError("output() was called before invoke().")
        return self._result


def available_here(session_class: type) -> bool:
    """Whether a runtime can exist on this machine's operating system (its `only_on`)."""
    import platform

    return session_class.only_on in (None, platform.system())


def can_run_here(fmt: str) -> bool:
    """Whether this machine has the runtime that executes `fmt` (Core ML needs macOS)."""
    from edgekd.artifact import FORMATS

    return available_here(RUNTIMES.get(FORMATS.get(fmt).runtime))


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
    """A session of `artifact` in its runtime; a file the runtime cannot load is an `ExportError` that
    names it and its format."""
    from edgekd.artifact import FORMATS
    from edgekd.bench import one_line

    runtime = FORMATS.get(artifact.format).runtime
    try:
        return RUNTIMES.get(runtime)(str(artifact.path), threads)
    except (EdgeKDError, ImportError):
        raise
    except Exception as e:  # each runtime raises its own kinds: ValueError, RuntimeError, pybind11's
        raise ExportError(
            f"{artifact.path} ({artifact.format}): {runtime} cannot load it ({one_line(str(e))}); "
            "export it again."
        ) from e


def predict(session: Session, samples: np.ndarray) -> np.ndarray:
    """Run samples (N, ...) one at a time through a batch-1 session; return stacked outputs."""
    outputs = []
    for sample in samples:
        session.set_input(sample[None])
        session.invoke()
        outputs.append(session.output()[0])
    return np.stack(outputs)


def prepare_input(images_nchw: np.ndarray, contract) -> np.ndarray:
    """Normalised NCHW images as the artifact takes them: its layout, and for an image input
    (`contract.input_kind == "image"`) de-normalised back to RGB pixels in [0, 255]."""
    if contract.input_kind == "image":
        mean = np.asarray(contract.mean, np.float32)[None, :, None, None]
        std = np.asarray(contract.std, np.float32)[None, :, None, None]
        images_nchw = (images_nchw * std + mean) * np.float32(255)
    return to_layout(images_nchw, contract.layout)


def to_layout(images_nchw: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(images_nchw.transpose(0, 2, 3, 1)) if layout == "NHWC" else images_nchw
