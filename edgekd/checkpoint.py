"""The model file edgekd writes: weights in safetensors, and in its header the contract needed to
rebuild and feed the model (timm arch, and its `Preprocessing`: labels, input size, mean/std). No
pickle, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from edgekd._io import write_bytes_atomic
from edgekd.errors import TeacherError
from edgekd.preprocessing import Preprocessing

# 2: the preprocessing in a header entry of its own. 1 kept it flat in "info" (classes, input_size,
# mean, std); such checkpoints still load.
FORMAT = "edgekd-model/2"
FLAT_FORMAT = "edgekd-model/1"


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    preprocessing: Preprocessing
    kwargs: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def save_model(path: Path, model: nn.Module, info: ModelInfo) -> Path:
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    header = {"arch": info.arch, "kwargs": info.kwargs, "provenance": info.provenance}
    metadata = {
        "format": FORMAT,
        "info": json.dumps(header),
        "preprocessing": info.preprocessing.to_json(),
    }
    # Serialised here and written by Python: safetensors' own writer reports a full disk as a
    # SafetensorError rather than the OSError(ENOSPC) callers turn into a DiskFullError.
    return write_bytes_atomic(path, save(state, metadata=metadata))


def read_info(path: Path) -> ModelInfo | None:
    """The contract stored in an edgekd checkpoint, or None for any other file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception:
        return None
    if metadata.get("format") not in (FORMAT, FLAT_FORMAT):
        return None
    try:
        raw = json.loads(metadata["info"])
        if metadata["format"] == FLAT_FORMAT:
            flat = {key: raw.pop(key) for key in ("classes", "input_size", "mean", "std")}
            preprocessing = Preprocessing(flat["input_size"], flat["mean"], flat["std"], flat["classes"])
        else:
            preprocessing = Preprocessing.from_json(metadata["preprocessing"])
        return ModelInfo(preprocessing=preprocessing, **raw)
    except (KeyError, TypeError, ValueError):  # a header edgekd did not write (ConfigError is one)
        return None


def load_model(path: Path) -> tuple[nn.Module, ModelInfo]:
    from safetensors.torch import load_file

    from edgekd.catalog import build_model

    info = read_info(path)
    if info is None:
        raise TeacherError(f"{path}: damaged, or not a checkpoint written by edgekd (no '{FORMAT}' header).")
    model = build_model(info.arch, info.preprocessing.num_classes, **info.kwargs)
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:  # safetensors and load_state_dict raise several types for a damaged file
        why = " ".join(str(e).split())[:200]
        raise TeacherError(f"{path}: damaged edgekd checkpoint ({type(e).__name__}: {why}).") from e
    return model.eval(), info
