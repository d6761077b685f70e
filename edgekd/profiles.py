"""Measured latencies, one CSV per target in `profiles/`: what the latency predictor is fitted to.

Every row says where its figure came from (`source`): this host, an attached device, or a cited
publication. A published row keeps the runtime, threads and statistic its source states, so rows from
another runtime are never silently mixed into a fit (`edgekd.latency` fits one runtime at a time).

Example:
    >>> from edgekd.profiles import read_profile
    >>> rows = read_profile("host")
    >>> sorted({r.runtime for r in rows})
    ['litert']
"""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from edgekd._io import atomic_path
from edgekd.errors import ConfigError
from edgekd.paths import shipped_dir, user_config_dir

STATISTICS = ("median", "mean", "min")


@dataclass(frozen=True)
class ProfileRow:
    model: str  # timm arch
    input_size: int
    precision: str
    runtime: str  # litert, ncnn, onnxruntime, coreml, openvino, paddle_lite, pytorch, vela
    runtime_version: str
    threads: int  # 0 where the runtime does not use CPU threads (an NPU)
    latency_ms_median: float  # the central figure; `statistic` says which one the source gives
    latency_ms_p90: float | None
    source: str  # "measured: <device>" or a citation (repository + path, or URL)
    measured_at: str  # ISO date of the measurement or of the publication
    statistic: str = "median"
    device: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.latency_ms_median <= 0:
            raise ValueError(f"latency_ms_median must be positive, got {self.latency_ms_median}")
        if not self.source.strip():
            raise ValueError("every row needs a source")


COLUMNS = tuple(f.name for f in dataclasses.fields(ProfileRow))


def user_profiles_dir() -> Path:
    """Where `edgekd profile --record` appends rows by default: `profiles/` in the user's config."""
    return user_config_dir() / "profiles"


def profile_dirs() -> list[Path]:
    """The shipped `profiles/`, the user's (`user_profiles_dir`), then `EDGEKD_PROFILES_PATH`
    (':'-separated)."""
    extra = [Path(p) for p in os.environ.get("EDGEKD_PROFILES_PATH", "").split(os.pathsep) if p]
    return [shipped_dir("profiles"), user_profiles_dir(), *extra]


def read_profile_file(path: Path) -> list[ProfileRow]:
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(line for line in f if not line.startswith("#"))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: missing columns {missing}; expected {list(COLUMNS)}.")
        for number, raw in enumerate(reader, start=2):
            try:
                rows.append(_row(raw))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{path}, data row {number}: {e}") from e
    return rows


def _row(raw: dict[str, str]) -> ProfileRow:
    fields = {f.name: f for f in dataclasses.fields(ProfileRow)}
    values: dict[str, object] = {}
    for name in fields:
        text = (raw.get(name) or "").strip()
        if name in ("input_size", "threads"):
            values[name] = int(text)
        elif name == "latency_ms_median":
            values[name] = float(text)
        elif name == "latency_ms_p90":
            values[name] = float(text) if text else None
        else:
            values[name] = text
    return ProfileRow(**values)  # type: ignore[arg-type]


def read_profile(target: str) -> list[ProfileRow]:
    """All rows for `target` across the profile directories (none when no file exists)."""
    rows = []
    for directory in profile_dirs():
        path = directory / f"{target}.csv"
        if path.exists():
            rows += read_profile_file(path)
    return rows


def write_profile_file(path: Path, rows: list[ProfileRow], header_comment: str = "") -> None:
    """Write rows atomically (sorted, so a re-measurement diffs cleanly)."""
    ordered = sorted(rows, key=lambda r: (r.runtime, r.precision, r.threads, r.model, r.input_size, r.source))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        for line in header_comment.splitlines():
            f.write(f"# {line}\n")
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in ordered:
            writer.writerow(["" if v is None else v for v in dataclasses.astuple(row)])


def append_row(path: Path, row: ProfileRow) -> Path:
    """Add `row` to the profile file at `path` (created with a header comment if new), atomically."""
    header = ""
    rows: list[ProfileRow] = []
    if path.exists():
        rows = read_profile_file(path)
        with open(path) as f:
            header = "\n".join(line[2:].rstrip("\n") for line in f if line.startswith("# "))
    else:
        header = "Latencies measured by `edgekd profile --record`: every row names its device and date."
    path.parent.mkdir(parents=True, exist_ok=True)
    write_profile_file(path, [*rows, row], header)
    return path
