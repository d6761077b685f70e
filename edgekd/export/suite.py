"""Export one model to several formats and precisions, gate each artifact's parity in its own runtime,
time it on this host, and collect one row per artifact (the table `edgekd export --all` prints).

A failure never stops the rest: a format whose converter fails gives a "failed to export" row with the
converter's error (op and layer where it can be found), an artifact below its parity gate gives
"exported, failed parity" with the metric and its value, and an artifact whose runtime cannot exist
here (Core ML off macOS) is validated from its spec and says so. The first row is PyTorch eager, the
reference every other row is compared with.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.artifact import FORMATS
from edgekd.errors import ConfigError
from edgekd.export.ship import ExportInputs, ship
from edgekd.progress import Observer, SilentObserver

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekd.data import DataSplits
    from edgekd.export.parity import ParityGate

log = logging.getLogger(__name__)

REFERENCE = "reference"
OK = "ok"
FAILED_PARITY = "exported, failed parity"
FAILED_EXPORT = "failed to export"
NOT_RUNNABLE = "exported, spec checked (cannot run here)"
UNSUPPORTED = "unsupported precision"


@dataclass(frozen=True)
class ExportRow:
    format: str
    precision: str
    status: str
    file: str | None = None
    size_mb: float | None = None
    accuracy: float | None = None
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    cosine_similarity: float | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None  # latency / PyTorch eager latency, measured in the same run
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in (FAILED_PARITY, FAILED_EXPORT)


def requested_pairs(formats: list[str], precisions: list[str] | None) -> list[tuple[str, str]]:
    """(format, precision) pairs: each format at each requested precision, or at all it supports. A
    pair a format lacks gives an "unsupported precision" row, but a request that no format can meet
    (an unknown precision, or none of the pairs exists) is refused, listing the pairs that exist."""
    from edgekd.targets import PRECISIONS

    specs = [FORMATS.get(fmt) for fmt in formats]  # an unknown name raises, listing the valid ones
    valid = ", ".join(f"{fmt} {p}" for fmt, spec in zip(formats, specs, strict=True) for p in spec.precisions)
    unknown = [p for p in precisions or () if p not in PRECISIONS]
    if unknown:
        raise ConfigError(
            f"--precision {', '.join(unknown)}: no such precision (valid: {', '.join(PRECISIONS)}); "
            f"the formats asked for export {valid}."
        )
    pairs = [
        (fmt, precision)
        for fmt, spec in zip(formats, specs, strict=True)
        for precision in precisions or spec.precisions
    ]
    if not any(precision in FORMATS.get(fmt).precisions for fmt, precision in pairs):
        raise ConfigError(
            f"none of the requested exports exists ({', '.join(f'{f} {p}' for f, p in pairs)}); "
            f"valid: {valid}."
        )
    return pairs


def export_matrix(
    model: nn.Module,
    arch: str,
    inputs: ExportInputs,
    *,
    out_dir: Path,
    pairs: list[tuple[str, str]],
    gates: dict[str, ParityGate] | None = None,
    threads: int = 1,
    latency: bool = True,
    format_options: dict[str, dict[str, Any]] | None = None,
    observer: Observer | None = None,
) -> list[ExportRow]:
    """One row for PyTorch eager, then one per (format, precision) in `pairs`, in that order."""
    from edgekd.devices.local import measure_torch_latency
    from edgekd.export.parity import load_gates, reference_logits

    observer = observer or SilentObserver()
    model = model.eval()
    gates = load_gates() if gates is None else gates
    # One PyTorch pass serves every artifact's comparison and the reference row's accuracy.
    reference = reference_logits(model, inputs.images)
    reference_accuracy = float((reference.argmax(1) == inputs.targets.numpy()).mean())
    eager_ms = None
    if latency:
        shape = inputs.preprocessing.with_layout("NCHW").input_shape
        eager_ms = measure_torch_latency(model, shape, threads=threads).median_ms
    rows = [
        ExportRow(
            "pytorch",
            "fp32",
            REFERENCE,
            accuracy=reference_accuracy,
            latency_ms=eager_ms,
            latency_ratio=1.0 if eager_ms else None,
        )
    ]
    task = observer.task("exporting", total=len(pairs))
    for fmt, precision in pairs:
        row = _one(
            model, arch, inputs, reference, fmt, precision, out_dir, gates, threads, latency, format_options
        )
        if eager_ms and row.latency_ms:
            row = replace(row, latency_ratio=row.latency_ms / eager_ms)
        log.info("%s %s: %s %s", fmt, precision, row.status, row.detail)
        rows.append(row)
        task.advance(1)
    task.close()
    return rows


def _one(
    model, arch, inputs, reference, fmt, precision, out_dir, gates, threads, latency, format_options
) -> ExportRow:
    """The row of one (format, precision): `ship`'s result in the table's words."""
    spec = FORMATS.get(fmt)
    if precision not in spec.precisions:
        return ExportRow(fmt, precision, UNSUPPORTED, detail=f"{fmt} supports {', '.join(spec.precisions)}")
    shipped = ship(
        model,
        fmt,
        precision,
        inputs,
        gates,
        arch=arch,
        out_dir=out_dir,
        options=(format_options or {}).get(fmt),
        reference=reference,
        threads=threads,
        latency=latency,
    )
    if shipped.artifact is None:
        return ExportRow(fmt, precision, FAILED_EXPORT, detail=shipped.export_error or "")
    artifact = shipped.artifact
    row = ExportRow(fmt, precision, OK, file=str(artifact.path), size_mb=artifact.size_bytes / 1e6)
    if shipped.parity is None:
        return replace(row, status=NOT_RUNNABLE, detail=shipped.cannot_run_here or "")
    report = shipped.parity
    row = replace(
        row,
        accuracy=report.artifact_accuracy,
        top1_agreement=report.top1_agreement,
        max_abs_diff=report.max_abs_diff,
        cosine_similarity=report.cosine_similarity,
        latency_ms=shipped.latency.median_ms if shipped.latency is not None else None,
    )
    if shipped.failed_parity:
        return replace(row, status=FAILED_PARITY, detail=shipped.gate_message())
    return row


def rows_as_dicts(rows: list[ExportRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def read_exports(path: Path, arch: str) -> list[dict[str, Any]]:
    """The rows of an earlier `exports.json` at `path` (none when there is no file), so a new export
    adds to them. Read before anything is exported: a file that is not edgekd's, or one of another
    model, fails first rather than being overwritten."""
    import json

    if not path.exists():
        return []
    try:
        summary = json.loads(path.read_text())
        rows, earlier = summary["rows"], summary["arch"]
        if not all(isinstance(row, dict) and {"format", "precision"} <= row.keys() for row in rows):
            raise ValueError("a row lacks its format or precision")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: not an edgekd exports.json ({e}); move it away or pass --out another directory."
        ) from e
    if earlier != arch:
        raise ConfigError(
            f"{path} lists exports of {earlier}, not {arch}; pass --out another directory so neither "
            "table loses rows."
        )
    return rows


def merge_rows(earlier: list[dict[str, Any]], rows: list[ExportRow]) -> list[dict[str, Any]]:
    """`earlier` rows with `rows` merged in by (format, precision): a new row replaces the earlier one
    of its key in place, and one of a new key is appended."""
    merged = {(row["format"], row["precision"]): row for row in earlier}
    merged.update({(row.format, row.precision): asdict(row) for row in rows})
    return list(merged.values())


def export_inputs(
    data: DataSplits,
    parity_images: int | None,
    calibration_images: int,
    *,
    split: str = "val",
    seed: int = 0,
) -> ExportInputs:
    """Parity on `parity_images` images drawn (seeded) from `split` (None: all of it), int8
    calibrated on `calibration_images` drawn from the training split."""
    from edgekd.data import representative_images, stack, stack_sample

    for option, count in (("--parity-images", parity_images), ("--calibration-images", calibration_images)):
        if count is not None and count < 1:
            raise ConfigError(f"{option} {count}: parity and int8 calibration need at least one image.")
    dataset = getattr(data, split)
    if parity_images is None:
        images, targets = stack(dataset)
    else:
        images, targets = stack_sample(dataset, parity_images, seed=seed)
    return ExportInputs(
        preprocessing=data.preprocessing,
        images=images,
        targets=targets,
        calibration=representative_images(data.train, calibration_images, seed=seed),
    )
