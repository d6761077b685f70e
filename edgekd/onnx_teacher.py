"""A teacher given as an ONNX file and run by ONNX Runtime, for distilling from a model whose PyTorch
code is not at hand (`edgekd fit --teacher teacher.onnx`).

The file is validated against the data when it is loaded (one image input, 4-D, 3 channels, the data's
input size if the size is fixed, one logit per class), so a mismatch fails before any training. The
wrapper only produces logits: losses on feature maps or embeddings (fitnet, at, sp, rkd) need a timm
teacher. `onnxruntime` and `onnx` come with the `edgekd[onnx]` extra and are imported only here.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from edgekd._io import file_sha256
from edgekd.checkpoint import ModelInfo
from edgekd.data import DataSplits
from edgekd.errors import TeacherError

log = logging.getLogger(__name__)

EXTRA = "pip install 'edgekd[onnx]'"
# ONNX element types the wrapper can feed; the data pipeline's float32 images are cast to them.
_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise TeacherError(f"An ONNX teacher is run by ONNX Runtime, which is not installed: {EXTRA}") from e
    return onnxruntime


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise TeacherError(f"Reading an ONNX teacher needs the onnx package, not installed: {EXTRA}") from e
    return onnx


def _tensors(graph) -> list:
    """Every TensorProto of a graph: initializers (dense and sparse) and node attributes, subgraphs
    included, since each of them may keep its bytes in an external file."""
    found = [*graph.initializer]
    for sparse in graph.sparse_initializer:
        found += [sparse.values, sparse.indices]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                found.append(attribute.t)
            found += list(attribute.tensors)
            if attribute.HasField("g"):
                found += _tensors(attribute.g)
            for subgraph in attribute.graphs:
                found += _tensors(subgraph)
    return found


def _weights(path: Path) -> tuple[list[str], int]:
    """The external data files the model reads its weights from (relative to its folder, sorted), and
    the number of weights in its initializers."""
    onnx = _onnx()
    model = onnx.load(str(path), load_external_data=False)
    external: set[str] = set()
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            external.update(entry.value for entry in tensor.external_data if entry.key == "location")
    # int64 initializers are shapes and axes (Reshape, ReduceMean), not weights.
    weights = [t for t in model.graph.initializer if t.data_type != onnx.TensorProto.INT64]
    count = sum(int(np.prod(t.dims, dtype=np.int64)) for t in weights)
    return sorted(external), count


def _dim(value: Any) -> int | None:
    """A fixed dimension as an int; None for a symbolic ('batch') or unknown one."""
    return value if isinstance(value, int) and value > 0 else None


class OnnxTeacher(nn.Module):
    """An ONNX classifier behind the `nn.Module` interface the trainer calls: NCHW float images in,
    float32 logits `(N, classes)` out, on the input's device. The ONNX Runtime session (CPU) is built
    once here; a model with NHWC input gets its batches transposed, and one with a fixed batch size is
    run in chunks of that size (the last one zero-padded, the padding's outputs dropped). It has no
    parameters and is always frozen.

    It cannot provide feature maps or a pooled embedding: it has no timm `forward_intermediates`,
    `feature_info` or `get_classifier`, and edgekd's feature taps refuse it with that message.

    Args:
        path: the `.onnx` file; external weight files (`*.onnx.data`) are read from beside it.

    Attributes:
        channels_last: whether the model takes NHWC input.
        batch_size: the model's fixed batch size, or None where it is dynamic.
        spatial: the model's fixed (height, width); None for a dynamic one.
        parameter_count: the weights in the model's initializers, as exported (a folded BatchNorm is
            part of its convolution). The wrapper has no parameters of its own and cannot be traced,
            so `edgekd.analysis.analyze` cannot count them.
        sha256: of the `.onnx` file; `external_sha256` of each external data file, by name.
        runtime_version: the ONNX Runtime version that runs it.

    Raises:
        TeacherError: the file is missing, ONNX Runtime cannot load it, or it has other than one 4-D
            image input with 3 channels.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise TeacherError(f"{path}: ONNX teacher file does not exist.")
        self.path = path
        self._session = self._open()
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            names = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise TeacherError(
                f"{path}: the ONNX teacher has {len(inputs)} inputs ({names}); edgekd feeds one batch of "
                "images, so export the model with a single image input."
            )
        spec = inputs[0]
        shape = list(spec.shape) if spec.shape is not None else []
        if len(shape) != 4:
            raise TeacherError(
                f"{path}: the ONNX teacher's input {spec.name!r} has shape {shape}; an image batch must be "
                "4-D, NCHW (N, 3, H, W) or NHWC (N, H, W, 3)."
            )
        if spec.type not in _INPUT_TYPES:
            raise TeacherError(
                f"{path}: the ONNX teacher's input {spec.name!r} is {spec.type}; edgekd feeds normalised "
                f"float images, so the input must be one of {', '.join(_INPUT_TYPES)}."
            )
        # Channels-last when the last dimension is the 3 colour channels and the second is not (a 3-row
        # image would be ambiguous; NCHW, PyTorch's layout, wins the tie).
        self.channels_last = shape[3] == 3 and shape[1] != 3
        channels = shape[3] if self.channels_last else shape[1]
        if _dim(channels) not in (None, 3):
            raise TeacherError(
                f"{path}: the ONNX teacher's input {spec.name!r} {shape} has {channels} channels; edgekd's "
                "images have 3 (RGB)."
            )
        self.input_name, self.input_shape = spec.name, tuple(shape)
        self.output_name, self.output_shape = outputs[0].name, tuple(outputs[0].shape or ())
        if len(outputs) > 1:
            log.warning(
                "%s has %d outputs; the first, %r, is taken as the logits",
                path,
                len(outputs),
                outputs[0].name,
            )
        self.batch_size = _dim(shape[0])  # None: any batch size runs in one call
        self.spatial = (
            (_dim(shape[1]), _dim(shape[2])) if self.channels_last else (_dim(shape[2]), _dim(shape[3]))
        )
        self._dtype = _INPUT_TYPES[spec.type]
        self.external_data, self.parameter_count = _weights(path)
        self.sha256 = file_sha256(path)
        self.external_sha256 = {name: file_sha256(path.parent / name) for name in self.external_data}
        digest = hashlib.sha256(self.sha256.encode())
        for name, sha in self.external_sha256.items():
            digest.update(f"{name}:{sha}".encode())
        # The teacher-output cache keys a teacher by a digest of its state dict. This module has no
        # parameters, so without this buffer every ONNX teacher would share one key and a new file would
        # be served another file's cached logits. The graph's and the external weights' bytes both count:
        # two exports of one architecture can have identical .onnx files and differ only in .onnx.data.
        self.register_buffer("onnx_sha256", torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8))
        self.requires_grad_(False)
        self.eval()

    def _open(self):
        ort = _onnxruntime()
        self.runtime_version = ort.__version__
        try:
            return ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
            raise TeacherError(
                f"{self.path}: not a valid ONNX model, ONNX Runtime cannot load it: {e}"
            ) from e

    def __getstate__(self) -> dict[str, Any]:
        # An InferenceSession cannot be pickled; a copy (copy.deepcopy, another process) opens its own.
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._session = self._open()

    def train(self, mode: bool = True) -> OnnxTeacher:
        return super().train(False)  # frozen: there is nothing for a training mode to change

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self.output_name], {self.input_name: batch})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            # Tracing would otherwise die inside numpy with "not supported for tensor subclasses".
            raise TeacherError(
                f"{self.path}: an ONNX teacher runs in ONNX Runtime, outside PyTorch, so torch.export and "
                "torch.compile cannot trace it (nor can edgekd.analysis cost it); its parameter count is "
                "OnnxTeacher.parameter_count."
            )
        images = x.detach().to("cpu", torch.float32)
        if self.channels_last:
            images = images.permute(0, 2, 3, 1)
        array = np.ascontiguousarray(images.numpy(), dtype=self._dtype)
        if self.batch_size is None:
            logits = self._run(array)
        else:
            chunks = []
            for start in range(0, len(array), self.batch_size):
                chunk = array[start : start + self.batch_size]
                short = self.batch_size - len(chunk)
                if short:
                    chunk = np.concatenate([chunk, np.zeros((short, *chunk.shape[1:]), chunk.dtype)])
                chunks.append(self._run(chunk)[: len(chunk) - short])
            logits = np.concatenate(chunks)
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)).to(x.device)

    def extra_repr(self) -> str:
        layout = "NHWC" if self.channels_last else "NCHW"
        return f"{self.path}, input {self.input_name!r} {list(self.input_shape)} {layout}"


def load_onnx_teacher(path: Path, data: DataSplits) -> tuple[OnnxTeacher, ModelInfo]:
    """Open `path` as a teacher for `data` and check that it fits: the data's input size where the
    model's is fixed, and one logit per class (checked on a trial batch of two blank images too, which
    also catches a batch dimension that is declared dynamic but is not).

    Args:
        path: the `.onnx` file.
        data: the splits the teacher will see; its classes, input size and mean/std go into the info.

    Returns:
        The wrapper and its `ModelInfo` (arch `onnx:<file stem>`, provenance: path, sha256, runtime).

    Raises:
        TeacherError: the file is missing, invalid, or does not fit the data; the message says which.
    """
    model = OnnxTeacher(path)
    path = model.path
    size = data.input_size
    height, width = model.spatial
    if (height is not None and height != size) or (width is not None and width != size):
        hint = f"pass --input-size {height}" if height is not None and height == width else "re-export it"
        raise TeacherError(
            f"{path}: the ONNX teacher takes {height or '?'}x{width or '?'} images (input "
            f"{list(model.input_shape)}), the data is {size}x{size} px; {hint} so that they match."
        )
    declared = _dim(model.output_shape[-1]) if model.output_shape else None
    if declared is not None and declared != data.num_classes:
        raise TeacherError(
            f"{path}: the ONNX teacher's output {model.output_name!r} {list(model.output_shape)} has "
            f"{declared} classes in its last dimension, the data has {data.num_classes}."
        )
    try:
        trial = model(torch.zeros(2, 3, size, size))
    except Exception as e:
        raise TeacherError(
            f"{path}: ONNX Runtime failed to run the teacher on a batch of 2 blank {size}x{size} images: {e}"
        ) from e
    if tuple(trial.shape) != (2, data.num_classes):
        raise TeacherError(
            f"{path}: the ONNX teacher returned shape {list(trial.shape)} for 2 images; expected logits of "
            f"shape [2, {data.num_classes}], one per class of the data."
        )
    info = ModelInfo(
        f"onnx:{path.stem}",
        data.preprocessing,
        provenance={
            "onnx": str(path),
            "sha256": model.sha256,
            "external_data": model.external_sha256,
            "onnxruntime": model.runtime_version,
        },
    )
    log.info("ONNX teacher %s: %s", path, model.extra_repr())
    return model, info
