"""Check a saved Core ML package (`.mlpackage`) against its contract from the spec alone, with no Core ML
runtime: what `edgekd.export.coreml` runs on every package it writes before publishing it, and what
parity falls back on off macOS, where Core ML cannot predict. Apart from the conversion because it
reads a finished package, whoever wrote it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import coremltools as ct

from edgekd.artifact import Contract

OUTPUT_NAME = "logits"
# Core ML's ImageType scales pixels by this one scalar, so the program receives RGB in [0, 1].
PIXEL_SCALE = 1 / 255
METADATA_PREFIX = "edgekd."
# int8: the compressed tensors must hold at least this share of the program's weight elements.
MIN_COMPRESSED_SHARE = 0.5
_COMPRESSED_WEIGHTS = {
    "linear": ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"),
    "palettize": ("constexpr_lut_to_dense",),
}
_WEIGHTED_OPS = ("conv", "conv_transpose", "linear", "matmul")


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
    problems += _check_precision(ops, contract, meta.get(METADATA_PREFIX + "weight_quantization"))
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
    if scale is None or abs(scale - PIXEL_SCALE) > 1e-6:
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
    key = METADATA_PREFIX + "contract"
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
        raw = meta.get(METADATA_PREFIX + field_name)
        if raw is None or json.loads(raw) != value:
            problems.append(f"metadata: {METADATA_PREFIX}{field_name} is {raw}, the contract says {value}.")
    if meta.get(METADATA_PREFIX + "precision") != contract.precision:
        problems.append(
            f"metadata: {METADATA_PREFIX}precision is {meta.get(METADATA_PREFIX + 'precision')!r}, "
            f"the contract says {contract.precision!r}."
        )
    target = meta.get(METADATA_PREFIX + "deployment_target")
    if target not in ct.target.__members__ or int(ct.target[target]) != int(spec.specificationVersion):
        problems.append(
            f"metadata: {METADATA_PREFIX}deployment_target is {target!r}, but the spec version "
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
