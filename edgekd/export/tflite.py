"""TFLite/LiteRT export through litert-torch, with NHWC input as mobile and Pi pipelines feed it.
The only module that imports litert_torch."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from edgekd._io import atomic_path
from edgekd.errors import ExportError
from edgekd.export import Contract, with_versions

log = logging.getLogger(__name__)


def export_model(model: nn.Module, path: Path, contract: Contract) -> Contract:
    # litert-torch draws its own progress on stdout unless told not to; the caller shows ours.
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    import litert_torch

    if contract.layout != "NHWC":
        raise ExportError(f"the tflite exporter writes NHWC input; the contract asks for {contract.layout}.")
    _, height, width, channels = contract.input_shape
    example = torch.zeros(1, height, width, channels)
    channels_last = litert_torch.to_channel_last_io(model, args=[0]).eval()
    try:
        edge_model = litert_torch.convert(channels_last, (example,))
    except Exception as e:
        raise ExportError(
            f"litert-torch could not convert {contract.arch} to tflite: {type(e).__name__}: {e}"
        ) from e
    with atomic_path(path) as tmp:
        edge_model.export(str(tmp))
    log.info("wrote %s (%.2f MB)", path, path.stat().st_size / 1e6)
    return with_versions(
        replace(contract, input_name="args_0"),
        torch=torch.__version__,
        litert_torch=_version("litert-torch"),
    )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
