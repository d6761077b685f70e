"""Core ML export through coremltools: an ML Program (`.mlpackage`) with an RGB image input, as iOS
and macOS apps feed it (a CVPixelBuffer from the camera, or Vision). The only module that imports
coremltools, with one exception: `edgekd.runtimes.CoreMLSession`, which predicts on macOS.

Input: Core ML's `ImageType` scales pixels by one scalar, here 1/255, so the program receives RGB in
[0, 1]; a scalar cannot express a per-channel std, so the mean/std normalisation is baked into the
graph by `ImageInput`, a small wrapper applied before conversion. The returned contract says
`input_kind="image"`: a consumer feeds RGB pixels in [0, 255] (`edgekd.runtimes.prepare_input`
de-normalises edgekd's images for it).

Output: a plain model, not a Core ML classifier. Its first and only output, "logits", is the
(1, num_classes) float32 multi-array that parity compares (`edgekd.export.parity`). A
`ClassifierConfig` would replace that output by a class label and a label -> score dictionary (its
`classify` op consumes the logits, which are then no longer an output), so the labels travel in the
metadata instead, with the whole contract.

Precision: fp32 and fp16 are the program's compute precision. int8 is fp16 compute with 8-bit
weights, decompressed when Core ML loads the model (`weight_quantization`: "linear", symmetric
per-channel int8; or "palettize", an 8-bit k-means lookup table per tensor). Activations stay fp16,
so no calibration images are needed. Weights under `WEIGHT_THRESHOLD` elements stay fp16.

Core ML predicts only on macOS, so parity runs there. Everywhere, `validate_package` checks the
saved package's spec (input, output, ops against the deployment target, precision, metadata) before
the package is moved onto `path`.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import coremltools as ct
import numpy as np
import torch
import torch.nn as nn

from edgekd._io import write_failures_named
from edgekd.errors import ExportError
from edgekd.export import Contract, converter_output, with_versions
from edgekd.export.diagnose import conversion_error

log = logging.getLogger(__name__)

OUTPUT_NAME = "logits"
DEFAULT_DEPLOYMENT_TARGET = "iOS16"  # the first with compressed-weight ops (int8)
WEIGHT_QUANTIZATIONS = ("linear", "palettize")
# Weights with fewer elements stay fp16: their per-channel scales or 256-entry lookup table would
# cost about what 8 bits save, and they are a few percent of a model's bytes (coremltools' default).
WEIGHT_THRESHOLD = 2048
# int8: the compressed tensors must hold at least this share of the program's weight elements.
MIN_COMPRESSED_SHARE = 0.5

_PIXEL_SCALE = 1 / 255
_METADATA_PREFIX = "edgekd."
# mlprogram exists from iOS15 (spec version 6); the MIL op registry knows ops up to the newest.
_MIN_MLPROGRAM_VERSION = ct.target.iOS15
_COMPRESSED_WEIGHTS = {
    "linear": ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"),
    "palettize": ("constexpr_lut_to_dense",),
}
_WEIGHTED_OPS = ("conv", "conv_transpose", "linear", "matmul")
# ct.convert writes this ExecuTorch debugging aid beside the Core ML model; the package's
# Manifest.json does not list it and no Core ML runtime reads it.
_EXECUTORCH_DEBUG_FILE = "executorch_debug_handle_mapping.json"


class ImageInput(nn.Module):
    """`model` fed RGB in [0, 1] (Core ML's pixels / 255): applies (x - mean) / std per channel first."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


def deployment_targets() -> tuple[str, ...]:
    """The `deployment_target` names an ML Program can have (`ct.target` members, iOS15 and later)."""
    return tuple(name for name, value in ct.target.__members__.items() if value >= _MIN_MLPROGRAM_VERSION)


def export_model(
    model: nn.Module,
    path: Path,
    contract: Contract,
    *,
    calibration: torch.Tensor | None = None,
    qat: bool = False,
    weight_quantization: str = "linear",
    deployment_target: str = DEFAULT_DEPLOYMENT_TARGET,
) -> Contract:
    """Convert `model` (NCHW float, normalised input) to an ML Program at `path` (`.mlpackage`).

    `weight_quantization` chooses int8's weight compression ("linear" or "palettize");
    `deployment_target` is the oldest OS the package must load on (a `ct.target` name, e.g. "iOS17").
    """
    target = _target(deployment_target)
    _check_request(contract, calibration, qat, weight_quantization, target, deployment_target)
    written = with_versions(
        replace(contract, input_kind="image", io_dtype="float32"),
        torch=torch.__version__,
        coremltools=ct.__version__,
    )
    mlmodel = _convert(model, contract, target)
    if contract.precision == "int8":
        mlmodel = _compress(mlmodel, weight_quantization, contract.arch)
    _describe(mlmodel, written, deployment_target, weight_quantization)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        package = staging / path.name
        with converter_output("coremltools"), write_failures_named(path, staging):  # tqdm bars for every pass
            mlmodel.save(str(package))
        (package / _EXECUTORCH_DEBUG_FILE).unlink(missing_ok=True)
        report = validate_package(package, written)
        if report.problems:
            raise ExportError(
                f"{path}: the Core ML package written for {contract.arch} ({contract.precision}) fails "
                f"validation:\n  " + "\n  ".join(report.problems)
            )
        _publish(package, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s (%.2f MB; %s)", path, _tree_bytes(path) / 1e6, report.summary)
    return written


def _target(name: str):
    valid = deployment_targets()
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ExportError(
            f"unknown Core ML deployment target {name!r}: an ML Program needs one of "
            f"{', '.join(valid)}.{hint}"
        )
    return ct.target[name]


def _check_request(contract, calibration, qat, weight_quantization, target, target_name) -> None:
    if calibration is not None:
        raise ExportError(
            "the coreml exporter quantizes weights only and uses no calibration images; drop calibration=."
        )
    if qat:
        raise ExportError(
            f"{contract.arch} was trained quantization-aware, which Core ML export does not use; "
            "export the float model with precision 'int8' (weights only) instead."
        )
    if weight_quantization not in WEIGHT_QUANTIZATIONS:
        raise ExportError(
            f"unknown weight_quantization {weight_quantization!r} for Core ML int8; choose "
            f"{' or '.join(map(repr, WEIGHT_QUANTIZATIONS))}."
        )
    if contract.precision == "int8" and target < ct.target.iOS16:
        raise ExportError(
            f"precision 'int8' needs compressed-weight ops, which Core ML has from iOS16 on, but "
            f"deployment_target is {target_name!r}; raise the deployment target to iOS16 or later, "
            "or export fp16."
        )
    if contract.layout != "NCHW" or len(contract.input_shape) != 4 or contract.input_shape[:2] != (1, 3):
        raise ExportError(
            f"the coreml exporter takes an RGB image, NCHW (1, 3, H, W); the contract asks for "
            f"{contract.layout} {contract.input_shape}. Build it with edgekd.export.make_contract."
        )
    if len(contract.mean) != 3 or len(contract.std) != 3:
        raise ExportError(
            f"the contract's mean {contract.mean} and std {contract.std} need one value per RGB channel."
        )


def _convert(model: nn.Module, contract: Contract, target):
    """torch.export of the image-input wrapper, then ct.convert to an ML Program."""
    _, _, height, width = contract.input_shape
    wrapped = ImageInput(model, contract.mean, contract.std).eval()
    pixels = torch.full((1, 3, height, width), 0.5)
    precision = ct.precision.FLOAT32 if contract.precision == "fp32" else ct.precision.FLOAT16
    try:
        program = torch.export.export(wrapped, (pixels,), strict=False).run_decompositions({})
        with converter_output("coremltools"):  # tqdm bars for every pass
            return ct.convert(
                program,
                inputs=[
                    ct.ImageType(
                        name=contract.input_name,
                        shape=(1, 3, height, width),
                        color_layout=ct.colorlayout.RGB,
                        scale=_PIXEL_SCALE,
                    )
                ],
                # float32 even from an fp16 program: iOS16+ would otherwise output fp16 logits.
                outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=precision,
            )
    except Exception as e:  # torch.export and coremltools raise many types
        example = torch.zeros(1, 3, height, width)
        raise conversion_error("coreml", contract.arch, model, example, e) from e


def _compress(mlmodel, weight_quantization: str, arch: str):
    import coremltools.optimize.coreml as cto

    if weight_quantization == "linear":
        op_config = cto.OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype="int8",
            granularity="per_channel",
            weight_threshold=WEIGHT_THRESHOLD,
        )
        compress = cto.linear_quantize_weights
    else:
        op_config = cto.OpPalettizerConfig(mode="kmeans", nbits=8, weight_threshold=WEIGHT_THRESHOLD)
        compress = cto.palettize_weights
    try:
        with converter_output("coremltools"):  # tqdm bars for every pass
            return compress(mlmodel, cto.OptimizationConfig(global_config=op_config))
    except Exception as e:
        raise ExportError(
            f"coremltools could not compress the weights of {arch} to 8 bits ({weight_quantization}): "
            f"{type(e).__name__}: {e}"
        ) from e


def _describe(mlmodel, contract: Contract, target_name: str, weight_quantization: str) -> None:
    """Native metadata: what Xcode shows, and the contract for tools that read the package."""
    from edgekd import __version__

    _, _, height, width = contract.input_shape
    mlmodel.author = "edgekd"
    mlmodel.version = __version__
    mlmodel.short_description = (
        f"{contract.arch} ({contract.precision}), {len(contract.labels)} classes; exported by edgekd."
    )
    mlmodel.input_description[contract.input_name] = (
        f"RGB image, {width}x{height}; the mean/std normalisation is inside the model."
    )
    mlmodel.output_description[OUTPUT_NAME] = (
        f"(1, {len(contract.labels)}) logits in the order of {_METADATA_PREFIX}labels."
    )
    for key, value in _metadata(contract, target_name, weight_quantization).items():
        mlmodel.user_defined_metadata[key] = value


def _metadata(contract: Contract, target_name: str, weight_quantization: str) -> dict[str, str]:
    meta = {
        "contract": json.dumps(asdict(contract), sort_keys=True),
        "labels": json.dumps(list(contract.labels)),
        "mean": json.dumps(list(contract.mean)),
        "std": json.dumps(list(contract.std)),
        "precision": contract.precision,
        "deployment_target": target_name,
    }
    if contract.precision == "int8":
        meta["weight_quantization"] = weight_quantization
    return {_METADATA_PREFIX + key: value for key, value in meta.items()}


def _publish(package: Path, path: Path) -> None:
    """Move the finished `package` onto `path`. A directory cannot be renamed over another, so an
    older package is first renamed aside, into `package`'s staging directory (deleted by the caller);
    anything at `path` that is not a Core ML package is left alone."""
    if not path.exists():
        os.replace(package, path)
        return
    if not (path.is_dir() and (path / "Manifest.json").is_file()):
        raise ExportError(
            f"{path} exists and is not a Core ML package (no Manifest.json); it was not overwritten. "
            "Remove it, or export into another directory."
        )
    old = package.parent / f"{path.name}.old"
    os.replace(path, old)
    try:
        os.replace(package, path)
    except BaseException:
        os.replace(old, path)
        raise


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# --- validation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageReport:
    """What `validate_package` found in a saved package. Each problem begins with the name of the
    check that failed: "package", "input", "output", "ops", "precision" or "metadata"."""

    path: Path
    spec_version: int
    deployment_target: str  # the iOS release that spec version needs
    ops: dict[str, int]  # MIL op type -> count, over the whole program
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        compute = {op: n for op, n in self.ops.items() if op != "const" and not op.startswith("constexpr_")}
        return f"{sum(compute.values())} ops of {len(compute)} types, needs {self.deployment_target}"


def validate_package(path: str | os.PathLike[str], contract: Contract) -> PackageReport:
    """Check a saved `.mlpackage` against `contract` from its spec alone (no Core ML runtime needed):
    an ML Program; one RGB image input of the contract's size, scaled by 1/255; a (1, num_classes)
    float32 "logits" output first; only core MIL ops, each available at the package's deployment
    target, none custom; weights and compute in the contract's precision (int8: compressed weights);
    the edgekd metadata equal to `contract`. Returns the report; `problems` is empty when all pass.
    """
    path = Path(path)
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as e:
        return PackageReport(path, 0, "?", {}, (f"package: {path} cannot be read: {type(e).__name__}: {e}",))
    version = int(spec.specificationVersion)
    problems: list[str] = []
    if spec.WhichOneof("Type") != "mlProgram":
        problems.append(f"package: the model is a {spec.WhichOneof('Type')}, not an mlProgram.")
        return PackageReport(path, version, _release(version), {}, tuple(problems))
    ops = list(_operations(spec))
    problems += _check_input(spec, ops, contract)
    problems += _check_output(spec, contract)
    problems += _check_ops(spec, ops, path)
    meta = dict(spec.description.metadata.userDefined)
    problems += _check_precision(ops, contract, meta.get(_METADATA_PREFIX + "weight_quantization"))
    problems += _check_metadata(spec, meta, contract)
    counts = dict(Counter(op.type for op in ops).most_common())
    return PackageReport(path, version, _release(version), counts, tuple(problems))


def _operations(spec):
    """Every MIL operation of every function, nested blocks included."""

    def walk(operations):
        for op in operations:
            yield op
            for block in op.blocks:
                yield from walk(block.operations)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            yield from walk(block.operations)


def _check_input(spec, ops, contract: Contract) -> list[str]:
    inputs = spec.description.input
    if len(inputs) != 1:
        return [f"input: the model has {len(inputs)} inputs, expected 1 ({contract.input_name!r})."]
    first = inputs[0]
    _, _, height, width = contract.input_shape
    problems = []
    if first.name != contract.input_name:
        problems.append(f"input: named {first.name!r}, the contract says {contract.input_name!r}.")
    if first.type.WhichOneof("Type") != "imageType":
        return [*problems, f"input: {first.name!r} is a {first.type.WhichOneof('Type')}, not an image."]
    image = first.type.imageType
    if (image.height, image.width) != (height, width):
        problems.append(
            f"input: the image is {image.width}x{image.height}, the contract says {width}x{height}."
        )
    color = ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
    if color != "RGB":
        problems.append(f"input: the image's color space is {color}, expected RGB.")
    scale = _input_scale(ops, first.name)
    if scale is None or abs(scale - _PIXEL_SCALE) > 1e-6:
        problems.append(
            f"input: pixels are scaled by {scale}, expected 1/255 (the contract's input is RGB in [0, 255])."
        )
    return problems


def _input_scale(ops, input_name: str) -> float | None:
    """The scalar that the program multiplies the image input by (ImageType's `scale`); None if none."""
    values = {}
    for op in ops:
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "immediateValue":
            floats = op.attributes["val"].immediateValue.tensor.floats.values
            if len(floats) == 1:
                values[op.outputs[0].name] = float(floats[0])
    for op in ops:
        names = {key: [arg.name for arg in value.arguments] for key, value in op.inputs.items()}
        if op.type == "mul" and input_name in names.get("x", []) + names.get("y", []):
            other = names["y"] if input_name in names.get("x", []) else names["x"]
            return values.get(other[0]) if other else None
    return None


def _check_output(spec, contract: Contract) -> list[str]:
    outputs = spec.description.output
    if not outputs:
        return ["output: the model has no outputs."]
    first = outputs[0]
    expected = [1, len(contract.labels)]
    if first.type.WhichOneof("Type") != "multiArrayType":
        return [
            f"output: the first output {first.name!r} is a {first.type.WhichOneof('Type')}, not the "
            f"{tuple(expected)} logits multi-array (is it a classifier?)."
        ]
    array = first.type.multiArrayType
    problems = []
    if first.name != OUTPUT_NAME:
        problems.append(f"output: the first output is {first.name!r}, expected {OUTPUT_NAME!r}.")
    if list(array.shape) != expected:
        problems.append(f"output: {first.name!r} has shape {tuple(array.shape)}, expected {tuple(expected)}.")
    dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    if dtype != "FLOAT32":
        problems.append(f"output: {first.name!r} is {dtype}, expected FLOAT32.")
    return problems


def _check_ops(spec, ops, path: Path) -> list[str]:
    from coremltools.converters.mil.frontend.milproto import load as milproto
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    version = int(spec.specificationVersion)
    problems = []
    for op_type in sorted({op.type for op in ops}):
        versions = SSAOpRegistry.core_ops.get(op_type)
        if not versions:
            problems.append(f"ops: {op_type!r} is not a core MIL op (a custom or unknown op).")
        elif min(versions) > version:
            problems.append(
                f"ops: {op_type!r} needs {_release(min(versions))}, but the package targets "
                f"{_release(version)}."
            )
    if problems:
        return problems
    # coremltools' own reader: op versions, argument types and weight references must all resolve.
    weights = path / "Data" / "com.apple.CoreML" / "weights"
    try:
        milproto.load(spec, version, file_weights_dir=str(weights))
    except Exception as e:
        problems.append(f"ops: coremltools cannot read the program back: {type(e).__name__}: {e}")
    return problems


def _check_precision(ops, contract: Contract, weight_quantization: str | None) -> list[str]:
    from coremltools.proto import MIL_pb2

    def dtype(op) -> str:
        return MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType)

    def elements(op) -> int:
        count = 1
        for dim in op.outputs[0].type.tensorType.dimensions:
            count *= dim.constant.size
        return count

    floats = {"FLOAT16", "FLOAT32", "FLOAT64", "BFLOAT16"}
    expected = "FLOAT32" if contract.precision == "fp32" else "FLOAT16"
    weights = [
        op
        for op in ops
        if op.type == "const"
        and op.attributes["val"].WhichOneof("value") == "blobFileValue"
        and dtype(op) in floats
    ]
    compressed = [op for op in ops if op.type.startswith("constexpr_")]
    compute = Counter(dtype(op) for op in ops if op.type in _WEIGHTED_OPS)
    problems = []
    if not compute:
        problems.append(f"precision: the program has none of {', '.join(_WEIGHTED_OPS)}.")
    elif set(compute) != {expected}:
        problems.append(
            f"precision: {contract.precision} should compute in {expected}, but conv/linear/matmul outputs "
            f"are {dict(compute)}."
        )
    stray = Counter(dtype(op) for op in weights if dtype(op) != expected)
    if stray:
        problems.append(f"precision: {sum(stray.values())} weight tensors are {dict(stray)}, not {expected}.")
    if contract.precision == "fp32":
        half = sum(
            1
            for op in ops
            for out in op.outputs
            if MIL_pb2.DataType.Name(out.type.tensorType.dataType) == "FLOAT16"
        )
        if half:
            problems.append(f"precision: an fp32 program has {half} FLOAT16 tensors.")
    if contract.precision != "int8":
        if compressed:
            problems.append(
                f"precision: {contract.precision} has {len(compressed)} compressed weights "
                f"({compressed[0].type})."
            )
        return problems
    kinds = _COMPRESSED_WEIGHTS.get(weight_quantization or "", sum(_COMPRESSED_WEIGHTS.values(), ()))
    matching = [op for op in compressed if op.type in kinds]
    share = sum(map(elements, matching)) / max(1, sum(map(elements, matching + weights)))
    if not matching:
        problems.append(
            f"precision: int8 has no {' or '.join(kinds)} op: the weights were not compressed"
            f"{f' ({weight_quantization})' if weight_quantization else ''}."
        )
    elif share < MIN_COMPRESSED_SHARE:
        problems.append(
            f"precision: int8 compressed only {share:.0%} of the weight elements (at least "
            f"{MIN_COMPRESSED_SHARE:.0%} expected)."
        )
    return problems


def _check_metadata(spec, meta: dict[str, str], contract: Contract) -> list[str]:
    key = _METADATA_PREFIX + "contract"
    if key not in meta:
        return [f"metadata: no {key!r} in the package's user-defined metadata."]
    problems = []
    try:
        stored = json.loads(meta[key])
    except json.JSONDecodeError as e:
        return [f"metadata: {key!r} is not JSON ({e})."]
    expected = json.loads(json.dumps(asdict(contract)))
    differ = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
    if differ:
        problems.append(
            f"metadata: the stored contract differs from the expected one in {', '.join(differ)} "
            f"(stored {', '.join(f'{k}={stored.get(k)!r}' for k in differ[:3])})."
        )
    for field_name, value in (
        ("labels", list(contract.labels)),
        ("mean", list(contract.mean)),
        ("std", list(contract.std)),
    ):
        raw = meta.get(_METADATA_PREFIX + field_name)
        if raw is None or json.loads(raw) != value:
            problems.append(f"metadata: {_METADATA_PREFIX}{field_name} is {raw}, the contract says {value}.")
    if meta.get(_METADATA_PREFIX + "precision") != contract.precision:
        problems.append(
            f"metadata: {_METADATA_PREFIX}precision is {meta.get(_METADATA_PREFIX + 'precision')!r}, "
            f"the contract says {contract.precision!r}."
        )
    target = meta.get(_METADATA_PREFIX + "deployment_target")
    if target not in ct.target.__members__ or int(ct.target[target]) != int(spec.specificationVersion):
        problems.append(
            f"metadata: {_METADATA_PREFIX}deployment_target is {target!r}, but the spec version "
            f"{spec.specificationVersion} is {_release(int(spec.specificationVersion))}'s."
        )
    if spec.description.metadata.author != "edgekd":
        problems.append(f"metadata: the author is {spec.description.metadata.author!r}, expected 'edgekd'.")
    return problems


def _release(version: int) -> str:
    """The iOS release of a spec version (7 -> "iOS16")."""
    names = [
        name for name, value in ct.target.__members__.items() if value == version and name.startswith("iOS")
    ]
    return names[0] if names else f"spec version {version}"
