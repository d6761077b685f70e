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

Core ML predicts only on macOS, so parity runs there. Everywhere, `validate_package`
(`edgekd.export.coreml_package`) checks the saved package's spec (input, output, ops against the
deployment target, precision, metadata) before the package is moved onto `path`.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import coremltools as ct
import numpy as np
import torch
import torch.nn as nn

from edgekd._io import write_failures_named
from edgekd.artifact import Contract, with_versions
from edgekd.errors import ExportError
from edgekd.export import converter_output
from edgekd.export.coreml_package import METADATA_PREFIX, OUTPUT_NAME, PIXEL_SCALE, validate_package
from edgekd.export.diagnose import conversion_error

log = logging.getLogger(__name__)

DEFAULT_DEPLOYMENT_TARGET = "iOS16"  # the first with compressed-weight ops (int8)
WEIGHT_QUANTIZATIONS = ("linear", "palettize")
# Weights with fewer elements stay fp16: their per-channel scales or 256-entry lookup table would
# cost about what 8 bits save, and they are a few percent of a model's bytes (coremltools' default).
WEIGHT_THRESHOLD = 2048

# mlprogram exists from iOS15 (spec version 6); the MIL op registry knows ops up to the newest.
_MIN_MLPROGRAM_VERSION = ct.target.iOS15
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
        replace(contract, input_kind="image", io_dtype="float32", normalisation="model"),
        torch=torch.__version__,
        coremltools=ct.__version__,
    )
    wrapped = ImageInput(model, contract.mean, contract.std).eval()
    mlmodel = convert_image_model(wrapped, contract, target, output=OUTPUT_NAME, diagnosed=model)
    if contract.precision == "int8":
        mlmodel = _compress(mlmodel, weight_quantization, contract.arch)
    _describe(mlmodel, written, deployment_target, weight_quantization)

    def checked(package: Path) -> tuple[list[str], str]:
        report = validate_package(package, written)
        return report.problems, report.summary

    what = f"the Core ML package written for {contract.arch} ({contract.precision})"
    summary = write_package(mlmodel, Path(path), what, checked)
    log.info("wrote %s (%.2f MB; %s)", path, _tree_bytes(Path(path)) / 1e6, summary)
    return written


def write_package(mlmodel, path: Path, what: str, check: Callable[[Path], tuple[list[str], str]]) -> str:
    """Save `mlmodel` in a staging folder beside `path`, check it there (`check` gives its problems and a
    summary) and only then move it to `path`: a package that fails its check never appears. Returns
    the summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        package = staging / path.name
        with converter_output("coremltools"), write_failures_named(path, staging):  # tqdm bars for every pass
            mlmodel.save(str(package))
        (package / _EXECUTORCH_DEBUG_FILE).unlink(missing_ok=True)
        problems, summary = check(package)
        if problems:
            raise ExportError(f"{path}: {what} fails validation:\n  " + "\n  ".join(problems))
        _publish(package, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


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
            f"{contract.layout} {contract.input_shape}. Build it with edgekd.artifact.make_contract."
        )
    if len(contract.mean) != 3 or len(contract.std) != 3:
        raise ExportError(
            f"the contract's mean {contract.mean} and std {contract.std} need one value per RGB channel."
        )


def convert_image_model(
    wrapped: nn.Module,
    contract: Contract,
    target,
    *,
    output: str,
    diagnosed: nn.Module,
    classifier_config=None,
):
    """torch.export of `wrapped` (an image-input wrapper: [0, 1] RGB pixels in), then ct.convert to an ML
    Program whose input is the contract's RGB image and whose `output` is float32. A failure is
    diagnosed on `diagnosed`, the student inside the wrapper."""
    _, _, height, width = contract.input_shape
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
                        scale=PIXEL_SCALE,
                    )
                ],
                # float32 even from an fp16 program: iOS16+ would otherwise output fp16 values.
                outputs=[ct.TensorType(name=output, dtype=np.float32)],
                classifier_config=classifier_config,
                convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=precision,
            )
    except Exception as e:  # torch.export and coremltools raise many types
        example = torch.zeros(1, 3, height, width)
        raise conversion_error("coreml", contract.arch, diagnosed, example, e) from e


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
        f"(1, {len(contract.labels)}) logits in the order of {METADATA_PREFIX}labels."
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
    return {METADATA_PREFIX + key: value for key, value in meta.items()}


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
