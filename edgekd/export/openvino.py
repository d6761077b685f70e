"""OpenVINO IR export (.xml graph + .bin weights beside it), with the NCHW float input Intel CPUs,
GPUs and NPUs take. The only module that imports openvino and nncf.

fp32 converts the model through OpenVINO's PyTorch frontend and keeps fp32 weights. fp16 stores the
weights as FP16 (half the .bin; the CPU plugin decompresses them on load). int8 is NNCF post-training
quantization of the converted IR: symmetric int8 weights and activations observed on the caller's
calibration images, written as FakeQuantize nodes that the runtime fuses into integer kernels; input
and output stay float32. The contract rides in the IR's `rt_info` (`model_info/edgekd_contract`), so
the .xml alone says how to feed the model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import nncf
import openvino as ov
import torch
import torch.nn as nn
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
from nncf.quantization.range_estimator import RangeEstimatorParametersSet

from edgekd._io import write_failures_named
from edgekd.artifact import Contract, with_versions
from edgekd.errors import ExportError
from edgekd.export import converter_output, package_version
from edgekd.export.diagnose import conversion_error

log = logging.getLogger(__name__)

# Where the metadata lives in the IR's rt_info. OpenVINO's own tools read `model_info` (Model API
# takes `labels` from it), so our keys sit there too.
RT_INFO = "model_info"
# The PyTorch frontend leaves the output unnamed; a name lets consumers fetch it by key.
OUTPUT_NAME = "logits"


def export_model(
    model: nn.Module,
    path: Path,
    contract: Contract,
    *,
    calibration: torch.Tensor | None = None,
    qat: bool = False,
) -> Contract:
    if qat:
        # edgekd.quantize trains against litert's quantizer; NNCF's int8 arithmetic differs, so the
        # learned ranges would not carry over.
        raise ExportError(
            f"{contract.arch} was trained quantization-aware, and QAT models export only to tflite; "
            "export the float model to openvino (fp32, fp16, or int8 with calibration images)."
        )
    path = Path(path)
    if path.suffix != ".xml":
        raise ExportError(f"{path}: an OpenVINO IR is written as a .xml file (its .bin goes beside it).")
    example = torch.zeros(contract.input_shape)
    ov_model = _convert(model, example, contract)
    versions = {"torch": torch.__version__, "openvino": package_version("openvino")}
    if contract.precision == "int8":
        if calibration is None:
            raise ExportError("int8 export needs calibration images; pass calibration= to export().")
        ov_model = _quantize_int8(ov_model, calibration, contract)
        versions["nncf"] = package_version("nncf")
    written = with_versions(replace(contract, input_name=ov_model.input(0).get_any_name()), **versions)
    _set_metadata(ov_model, written)
    # Only fp16 compresses: int8 weights are already integer, and its remaining float constants
    # (biases, quantizer ranges) stay fp32 so the int8 IR matches what NNCF calibrated.
    _save_atomic(ov_model, path, compress_to_fp16=contract.precision == "fp16")
    log.info("wrote %s (%.2f MB weights)", path, path.with_suffix(".bin").stat().st_size / 1e6)
    return written


def _convert(model: nn.Module, example: torch.Tensor, contract: Contract) -> ov.Model:
    """The PyTorch model as an ov.Model with a static batch-1 input named like the contract says."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The PyTorch frontend traces with torch.jit, which warns about its own deprecation on
            # every call; the user can do nothing about it.
            warnings.filterwarnings(
                "ignore", message=r".*torch\.jit\.trace.* is deprecated", category=FutureWarning
            )
            ov_model = ov.convert_model(
                model, example_input=example, input=[ov.PartialShape(list(contract.input_shape))]
            )
    except Exception as e:  # the frontend raises OpConversionFailure, RuntimeError and others
        raise conversion_error("openvino", contract.arch, model, example, e) from e
    if len(ov_model.inputs) != 1 or len(ov_model.outputs) != 1:
        raise ExportError(
            f"{contract.arch} converted to an OpenVINO model with {len(ov_model.inputs)} inputs and "
            f"{len(ov_model.outputs)} outputs; edgekd exports classifiers with one image input and "
            "one logits output."
        )
    output = ov_model.output(0).get_partial_shape()
    classes = len(contract.labels)
    logits = output.is_static and output.rank.get_length() == 2 and output[0].get_length() == 1
    if not logits or (classes and output[1].get_length() != classes):
        raise ExportError(
            f"{contract.arch} outputs shape {output} in OpenVINO, but the contract expects logits "
            f"(1, {classes}) for its {classes} labels; export the classifier, not a feature extractor."
        )
    ov_model.input(0).get_tensor().set_names({contract.input_name})
    ov_model.output(0).get_tensor().set_names({OUTPUT_NAME})
    return ov_model


def _quantize_int8(ov_model: ov.Model, calibration: torch.Tensor, contract: Contract) -> ov.Model:
    """NNCF post-training quantization with the `performance` preset (symmetric weights and
    activations, NNCF's preset for speed), over every calibration image, with two changes from
    NNCF's defaults, both measured on a distilled EuroSAT mobilenetv3_small_100 (fp32 76.17 % on
    the validation split; benchmarks/export_eurosat.py):
      * activation ranges are the min/max over the calibration set, not the mean of per-batch
        extremes, which clips the tails of hard-swish and squeeze-excite outputs;
      * no overflow fix: it drops first-layer weights to 7 bits for CPUs without VNNI, a loss
        that VNNI CPUs (the intel-cpu target's AVX-VNNI) do not need.
    Defaults: 74.79 % on validation (-1.38 points); these: 76.05 % (-0.12)."""
    # export() checked them: float32, NCHW at the contract's size, enough of them
    images = calibration.numpy()
    # The IR's input is static (1, 3, H, W), and NNCF feeds each dataset item to it as is.
    dataset = nncf.Dataset([image[None] for image in images])
    try:
        # NNCF draws a rich progress bar on stdout
        with converter_output(f"NNCF (int8 of {contract.arch})", stream="stdout"):
            quantized = nncf.quantize(
                ov_model,
                dataset,
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(images),
                advanced_parameters=AdvancedQuantizationParameters(
                    overflow_fix=OverflowFix.DISABLE,
                    activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
                ),
            )
    except Exception as e:
        raise ExportError(
            f"NNCF int8 quantization of {contract.arch} for openvino failed: {type(e).__name__}: {e}"
        ) from e
    log.info("calibrated %s on %d images", contract.arch, len(images))
    return quantized


def _set_metadata(ov_model: ov.Model, contract: Contract) -> None:
    """The contract in the IR's rt_info, whole (JSON) and as a few plain keys a human can grep.

    Labels, mean and std are JSON lists: rt_info joins a Python list with spaces, which a label with
    a space would break. mean/std are deliberately not `mean_values`/`scale_values`: OpenVINO's Model
    API applies those to raw 0-255 pixels, but this input is already normalised."""
    entries = {
        "edgekd_contract": json.dumps(asdict(contract)),
        "arch": contract.arch,
        "precision": contract.precision,
        "layout": contract.layout,
        "labels": json.dumps(list(contract.labels)),
        "mean": json.dumps(list(contract.mean)),
        "std": json.dumps(list(contract.std)),
    }
    for key, value in entries.items():
        ov_model.set_rt_info(value, [RT_INFO, key])


def _save_atomic(ov_model: ov.Model, path: Path, *, compress_to_fp16: bool) -> None:
    """Write the .xml and .bin into a hidden directory beside `path`, then move them into place.

    The .xml does not name its weights file: OpenVINO opens the .bin with the same stem beside it.
    The .bin moves first, so whoever sees the new .xml also finds its weights complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        staged = staging / path.name
        with write_failures_named(path, staging):
            ov.save_model(ov_model, staged, compress_to_fp16=compress_to_fp16)
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
