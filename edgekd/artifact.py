"""What an exported file is, apart from how it is made: the table of formats (`FORMATS`), the contract a
consumer needs to feed and read an artifact (`Contract`), the artifact itself (`Artifact`: a file, its
format and contract), its sidecar JSON and the companion files that travel with it.

`edgekd.export` makes artifacts, `edgekd.runtimes` runs them and `edgekd.devices` times them; all three
import this module to learn what an artifact is, so none of them imports another for it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgekd._io import write_json_atomic
from edgekd._registry import Registry
from edgekd.errors import ExportError
from edgekd.preprocessing import Preprocessing


@dataclass(frozen=True)
class FormatSpec:
    name: str
    suffix: str  # of the file (or bundle directory) a consumer opens
    precisions: tuple[str, ...]
    runtime: str  # key in edgekd.runtimes.RUNTIMES that runs it
    extra: str  # the pip extra that installs its converter
    description: str
    layout: str = "NCHW"  # of the artifact's input tensor
    # Precisions whose converter observes activation ranges on calibration images (static int8);
    # Core ML's int8 quantizes weights only, so it needs none.
    calibrated: tuple[str, ...] = ("int8",)
    # Files beside the artifact that belong to it (OpenVINO's weights in <stem>.bin).
    companions: tuple[str, ...] = ()


FORMATS: Registry[FormatSpec] = Registry("export format")
for _spec in (
    FormatSpec(
        "tflite",
        ".tflite",
        ("fp32", "fp16", "int8"),
        "litert",
        "core",
        "TFLite/LiteRT flatbuffer via litert-torch",
        layout="NHWC",
    ),
    FormatSpec(
        "coreml",
        ".mlpackage",
        ("fp32", "fp16", "int8"),
        "coreml",
        "coreml",
        "Core ML mlprogram via coremltools (int8: weights only)",
        calibrated=(),
    ),
    FormatSpec(
        "openvino",
        ".xml",
        ("fp32", "fp16", "int8"),
        "openvino",
        "openvino",
        "OpenVINO IR (.xml + .bin); int8 via NNCF post-training quantization",
        companions=(".bin",),
    ),
    FormatSpec("onnx", ".onnx", ("fp32",), "onnxruntime", "onnx", "ONNX via the torch.onnx dynamo exporter"),
):
    FORMATS.add(_spec.name, _spec)


@dataclass(frozen=True)
class Contract:
    """What a consumer of the artifact needs to feed it and read it: it rides inside the artifact, in
    the format's own metadata where there is any and always in the sidecar JSON, so the file alone says
    how to use it."""

    arch: str
    input_name: str
    input_shape: tuple[int, ...]
    layout: str  # "NHWC" or "NCHW"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...]
    precision: str = "fp32"
    versions: dict[str, str] = field(default_factory=dict)
    # The dtype of the artifact's input and output tensors. For "int8" a consumer quantizes the
    # normalised input as round(x / scale) + zero_point and dequantizes the output as
    # (q - zero_point) * scale, with (scale, zero_point) from `input_quant` / `output_quant`.
    io_dtype: str = "float32"
    input_quant: tuple[float, int] | None = None
    output_quant: tuple[float, int] | None = None
    # "tensor": float input normalised with mean/std. "image": RGB pixels in [0, 255], the
    # normalisation baked into the artifact (Core ML's image input).
    input_kind: str = "tensor"
    # How an image file becomes the input, the steps `edgekd predict` and the bundles' snippets take:
    # decode it as `channel_order`, resize the whole image (no crop, aspect ratio not kept) to the
    # input size with `resize`, scale the [0, 255] pixels linearly to `pixel_range`, then (x - mean) /
    # std per channel, done by whoever `normalisation` names: "consumer" (the caller, before feeding)
    # or "model" (inside the artifact, which then takes the pixels: mean/std are for information).
    channel_order: str = "RGB"
    resize: str = "bilinear"
    pixel_range: tuple[float, float] = (0.0, 1.0)
    normalisation: str = "consumer"
    # The output tensor's name, and what it holds: "logits" (softmax gives probabilities) or
    # "probabilities" (they sum to 1), one value per label in `labels` order.
    output_name: str = "logits"
    output_kind: str = "logits"

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the input image."""
        if self.layout == "NHWC":
            return self.input_shape[1], self.input_shape[2]
        return self.input_shape[2], self.input_shape[3]

    def feeding_steps(self) -> str:
        """The preprocessing in one sentence, for the sidecar and the bundles' READMEs."""
        height, width = self.image_size
        size = f"{width}x{height}"
        low, high = self.pixel_range
        resize = f"resize the whole image to {size} ({self.resize}, no crop)"
        if self.normalisation == "model":
            return (
                f"decode as {self.channel_order}; {resize}; feed the {self.channel_order} pixels in "
                f"[0, 255] to {self.input_name!r}. Do NOT normalise: the model scales them to "
                f"[{low:g}, {high:g}] and applies mean/std itself."
            )
        return (
            f"decode as {self.channel_order}; {resize}; scale pixels from [0, 255] to [{low:g}, {high:g}]; "
            f"subtract mean {list(self.mean)} and divide by std {list(self.std)} per channel; feed "
            f"{self.io_dtype} {self.layout} {list(self.input_shape)} to {self.input_name!r}"
            + (" (quantized with input_quant)" if self.io_dtype == "int8" else "")
            + "."
        )

    def reading_steps(self) -> str:
        """What the output holds, in one sentence."""
        what = (
            "raw logits (apply softmax for probabilities)"
            if self.output_kind == "logits"
            else ("probabilities (they sum to 1)")
        )
        dequantize = "; dequantize with output_quant first" if self.io_dtype == "int8" else ""
        return f"{self.output_name!r} holds {len(self.labels)} {what}, in the order of labels{dequantize}."


INPUT_NAME = "image"  # every format's input tensor, where the format lets edgekd name it
# Every artifact is named <stem>-<precision><suffix>; `fit` and `edgekd export` both use this stem (before
# this, `edgekd export` wrote "model-*": such files in older run directories are simply left in place).
ARTIFACT_STEM = "student"


def make_contract(arch: str, fmt: str, preprocessing: Preprocessing, precision: str = "fp32") -> Contract:
    """The contract to export `arch` as `fmt`: `preprocessing` in the format's input layout."""
    p = preprocessing.with_layout(FORMATS.get(fmt).layout)
    return Contract(arch, INPUT_NAME, p.input_shape, p.layout, p.mean, p.std, p.labels, precision)


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str
    contract: Contract

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)

    @property
    def files(self) -> list[Path]:
        """Every file a consumer needs: the artifact (all files of a bundle directory such as an
        .mlpackage) and its companions (OpenVINO's .bin)."""
        paths = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        return paths + companion_files(self.path)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def companion_files(path: Path) -> list[Path]:
    """The files an artifact at `path` needs beside it: its format's companions (OpenVINO's .bin),
    whether or not they exist yet, and ONNX's external weights (`.onnx.data`) when there are any."""
    spec = next((FORMATS.get(n) for n in FORMATS if path.name.endswith(FORMATS.get(n).suffix)), None)
    declared = [path.with_suffix(suffix) for suffix in (spec.companions if spec else ())]
    external = path.with_name(path.name + ".data")
    return declared + ([external] if external.exists() else [])


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def load_artifact(path: Path) -> Artifact:
    """An exported file and the contract in its sidecar JSON."""
    sidecar = sidecar_path(path)
    if not path.exists() or not sidecar.exists():
        raise ExportError(f"{path}: artifact or its sidecar {sidecar.name} is missing.")
    meta = json.loads(sidecar.read_text())
    contract = meta["contract"]
    # Sidecars written before a field existed lack it: the field's default is what they meant.
    for key in ("input_shape", "mean", "std", "labels", "pixel_range"):
        if key in contract:
            contract[key] = tuple(contract[key])
    for key in ("input_quant", "output_quant"):
        if contract.get(key) is not None:
            contract[key] = tuple(contract[key])
    return Artifact(path, meta["format"], Contract(**contract))


def with_versions(contract: Contract, **versions: str) -> Contract:
    """`contract` recording the versions that wrote the artifact: edgekd's and the converter's."""
    from edgekd import __version__

    return replace(contract, versions={"edgekd": __version__, **contract.versions, **versions})


def write_sidecar(artifact: Artifact) -> Artifact:
    """Write `artifact`'s contract into its sidecar JSON (atomically) and return the artifact."""
    contract = artifact.contract
    write_json_atomic(
        artifact.sidecar,
        {
            "format": artifact.format,
            "file": artifact.path.name,
            "input": contract.feeding_steps(),
            "output": contract.reading_steps(),
            "contract": asdict(contract),
        },
    )
    return artifact
