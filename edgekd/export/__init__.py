"""Export a PyTorch model to a deployable file. One table of formats (`edgekd.artifact.FORMATS`) drives
validation, suggestions and the benchmark loop; each format is one module (`export/<name>.py`) with an
`export_model` function. What an artifact is (format, contract, sidecar) lives in `edgekd.artifact`.

int8 artifacts are quantized statically and need representative images (`calibration`): draw a few
hundred from the training data, normalised exactly like the model's input. A format that lists
int8 receives them as `export_model(..., calibration=images)` (float32 NCHW tensor, checked here).
A model trained quantization-aware (`edgekd.quantize.prepare_qat`) needs none: it learned its ranges
in training, and its format receives `export_model(..., qat=True)`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.artifact import ARTIFACT_STEM, FORMATS, Artifact, Contract, write_sidecar
from edgekd.errors import DependencyError, ExportError

if TYPE_CHECKING:
    import numpy as np
    import torch
    import torch.nn as nn

log = logging.getLogger(__name__)

# Static int8 quantization needs this many representative images by default; fewer give activation
# ranges that miss the tails of the real input distribution. `export(min_calibration=...)` lowers it.
MIN_CALIBRATION_IMAGES = 200


def export(
    model: nn.Module,
    fmt: str,
    out_dir: Path,
    *,
    contract: Contract,
    stem: str = ARTIFACT_STEM,
    calibration: np.ndarray | torch.Tensor | None = None,
    min_calibration: int = MIN_CALIBRATION_IMAGES,
    options: dict[str, Any] | None = None,
) -> Artifact:
    """Convert `model` (NCHW, float) to `fmt` at `contract.precision`; write the file and its sidecar
    atomically into `out_dir` and return the artifact. The artifact's parity is checked separately
    (`edgekd.export.parity`).

    `calibration` (float32, NCHW, normalised like the model's input; at least `min_calibration`
    images) is required for the precisions the format calibrates (`FormatSpec.calibrated`) and refused
    otherwise, and for a QAT model (`edgekd.quantize.QATModel`), which exports only int8 and brings its
    own activation ranges. `options` are the format's own keywords (e.g. Core ML's
    `deployment_target`, ONNX's `opset`)."""
    spec = FORMATS.get(fmt)
    if contract.precision not in spec.precisions:
        raise ExportError(
            f"format {fmt!r} does not support precision {contract.precision!r} yet; supported: "
            f"{', '.join(spec.precisions)}."
        )
    if contract.layout != spec.layout:
        raise ExportError(
            f"format {fmt!r} takes {spec.layout} input, but the contract says {contract.layout}; "
            "build it with edgekd.artifact.make_contract."
        )
    prepared: dict[str, Any] = {}  # export()'s own keywords, apart from the format's options
    if _is_qat_model(model):
        _check_qat_export(model, fmt, contract, calibration)
        prepared["qat"] = True
    elif contract.precision in spec.calibrated:
        prepared["calibration"] = _calibration_images(calibration, contract, min_calibration)
    elif calibration is not None:
        raise ExportError(
            f"calibration images were given but precision {contract.precision!r} does not use them; "
            f"pass calibration only with precision {' or '.join(map(repr, spec.calibrated)) or '(none)'} "
            f"for format {fmt!r}."
        )
    try:
        module = importlib.import_module(f"edgekd.export.{fmt}")
    except ImportError as e:
        raise DependencyError(
            f"the {fmt} exporter needs a backend that is not installed ({e.name}); "
            f"install it with: pip install 'edgekd[{spec.extra}]'"
        ) from e
    options = dict(options or {})
    _check_options(fmt, module.export_model, options)
    path = Path(out_dir) / f"{stem}-{contract.precision}{spec.suffix}"
    if not prepared.get("qat"):
        from edgekd.catalog import deploy_form

        model = deploy_form(model)
    written: Contract = module.export_model(model.eval(), path, contract, **prepared, **options)
    return write_sidecar(Artifact(path, fmt, written))


def package_version(package: str) -> str:
    """The installed version of `package`, for a contract's `versions` ("unknown" if not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def converter_output(what: str, stream: str = "stderr"):
    """Hold what a converter prints on `stream` ("stdout" or "stderr": progress bars, size reports)
    and pass it to the debug log: the core never prints, and the caller draws its own progress."""
    captured = io.StringIO()
    redirect = contextlib.redirect_stdout if stream == "stdout" else contextlib.redirect_stderr
    try:
        with redirect(captured):
            yield
    finally:
        if captured.getvalue().strip():
            log.debug("%s printed:\n%s", what, captured.getvalue().strip())


def _check_options(fmt: str, export_model: Any, options: dict[str, Any]) -> None:
    """The caller's `options` must be keywords of the format's `export_model` (not calibration or
    qat, which export() itself passes)."""
    import inspect

    accepted = [
        name
        for name, p in inspect.signature(export_model).parameters.items()
        if p.kind == p.KEYWORD_ONLY and name not in ("calibration", "qat")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ExportError(
            f"format {fmt!r} has no option(s) {unknown}; its options: {', '.join(accepted) or '(none)'}."
        )


def _is_qat_model(model: Any) -> bool:
    # Only edgekd.quantize makes QAT models: if it was never imported, `model` cannot be one, and a
    # plain export does not pay for importing it.
    quantize = sys.modules.get("edgekd.quantize")
    return quantize is not None and isinstance(model, quantize.QATModel)


def _check_qat_export(model: Any, fmt: str, contract: Contract, calibration: Any) -> None:
    """A QAT model ships as the int8 file of the format whose quantizer it was trained with."""
    if fmt != model.format or contract.precision != "int8":
        raise ExportError(
            f"{contract.arch} was trained quantization-aware for {model.format} int8, so it exports only "
            f"as format {model.format!r} with precision 'int8' (asked: {fmt!r}, {contract.precision!r}); "
            "export the float model for anything else."
        )
    if calibration is not None:
        raise ExportError(
            f"{contract.arch} was trained quantization-aware and learned its activation ranges in "
            "training; drop calibration=, which only post-training int8 uses."
        )
    if _spatial(contract) != model.input_hwc:
        raise ExportError(
            f"the contract's input is (height, width, channels) {_spatial(contract)}, but the QAT model "
            f"was prepared for {model.input_hwc}; export with the size it was prepared and trained at."
        )


def _calibration_images(images: Any, contract: Contract, minimum: int) -> torch.Tensor:
    """Check the caller's calibration set: enough images, NCHW, the contract's size, float."""
    import numpy as np
    import torch

    needed = f"at least {minimum} representative images (float32, NCHW, normalised like the input)"
    if images is None:
        raise ExportError(
            f"precision {contract.precision!r} quantizes activations statically and needs "
            f"calibration images: pass calibration= with {needed}, drawn from the training data."
        )
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ExportError(f"calibration must be a numpy array or torch tensor, not {type(images).__name__}.")
    if not images.is_floating_point():
        raise ExportError(
            f"calibration images have dtype {images.dtype}; pass float images normalised like the "
            f"model's input (mean {contract.mean}, std {contract.std}), not raw pixels."
        )
    height, width, channels = _spatial(contract)
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, height, width):
        raise ExportError(
            f"calibration images have shape {tuple(images.shape)}; expected (N, {channels}, {height}, "
            f"{width}) (NCHW, the contract's input size)."
        )
    if len(images) < max(minimum, 1):
        raise ExportError(
            f"{len(images)} calibration images are too few for {contract.precision}: pass {needed}, "
            f"or lower the minimum explicitly with min_calibration= (e.g. in tests)."
        )
    return images.detach().to(torch.float32).contiguous()


def _spatial(contract: Contract) -> tuple[int, int, int]:
    """(height, width, channels) of the contract's input."""
    if contract.layout == "NHWC":
        _, height, width, channels = contract.input_shape
    else:
        _, channels, height, width = contract.input_shape
    return height, width, channels
