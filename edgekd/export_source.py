"""What `edgekd export` exports: the student of a `fit` run directory, or an edgekd checkpoint, with the
real images its parity is checked on and its int8 calibrated with.

It reads a fit run (its `config.yaml` through `FitConfig`), so it sits on the pipeline's floor, above
the converters in `edgekd.export`, which know nothing of runs.

A run directory brings everything: its student (`student.safetensors`), the data it was fitted on
(`config.yaml`) and its target (for format options such as Core ML's deployment target). A bare
checkpoint carries its architecture, classes, input size and normalisation; its images come from
`data` (an ImageFolder directory; without one, the embedded digits, which fit only a checkpoint
trained on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekd.data import DataSplits

CHECKPOINT_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ExportSource:
    model: nn.Module
    arch: str
    data: DataSplits
    out_dir: Path
    format_options: dict[str, dict[str, Any]]  # per format, from the run's target


def load_export_source(source: Path, data: Path | None = None, cache_dir: Path | None = None) -> ExportSource:
    from edgekd.checkpoint import load_model
    from edgekd.data import decode_once
    from edgekd.paths import default_cache_dir
    from edgekd.pipeline import FitConfig
    from edgekd.sources import load_data
    from edgekd.targets import get_target

    source = Path(source)
    options: dict[str, dict[str, Any]] = {}
    if source.is_dir():
        checkpoint = source / "student.safetensors"
        if not checkpoint.exists() or not (source / "config.yaml").exists():
            raise ConfigError(
                f"{source}: not a finished `edgekd fit` run (no student.safetensors and config.yaml); "
                "pass a run directory or an edgekd checkpoint (.safetensors)."
            )
        config = FitConfig.from_yaml(source / "config.yaml")
        data = data if data is not None else config.data
        for name in reversed(config.targets):  # several targets: the first one's options win
            options.update(get_target(name, config.targets_dir or ()).format_options)
        out_dir = source / "exports"
    elif source.suffix == CHECKPOINT_SUFFIX and source.exists():
        checkpoint = source
        out_dir = source.parent / f"{source.stem}-exports"
    else:
        raise ConfigError(f"{source}: no such run directory or .safetensors checkpoint.")
    model, info = load_model(checkpoint)
    splits = decode_once(
        load_data(data, info.preprocessing.input_size), Path(cache_dir or default_cache_dir())
    )
    differences = info.preprocessing.differences(splits.preprocessing)
    if differences:
        where = data or "the embedded digits"
        raise DataError(
            f"{where}: its preprocessing differs from the checkpoint's (checkpoint vs data: "
            f"{'; '.join(differences)}); pass --data with the images {checkpoint.name} was trained on."
        )
    return ExportSource(model.eval(), info.arch, splits, out_dir, options)
