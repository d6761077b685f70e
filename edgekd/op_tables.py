"""The op table of a timm architecture at an input size: the dispatched ops as arrays, what the latency
model (`edgekd.latency`) fits and predicts on.

A table is traced once (`edgekd.analysis`; here about 100 profile models took about 4 minutes) and
cached by timm release. The models of the shipped profile rows (`profiles/*.csv`) are traced by the
maintainers and shipped in `profiles/op-tables/`, so that calibrating a target on its rows traces
nothing: a four-target fit's costing, apple-ane's 14 models among it, took 144 s, and the host has 109
rows. A shipped file serves only the timm release
and analysis version its name gives; with any other, the models are traced here as before. Regenerate
it after changing a profile or the analysis with `python -m edgekd.op_tables` (profiles/README.md).
"""

from __future__ import annotations

import functools
import gzip
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekd.analysis import COST_CLASSES, ModelCost
from edgekd.paths import default_cache_dir, shipped_dir

ANALYSIS_CACHE_VERSION = 4


@dataclass(frozen=True)
class OpTable:
    """The dispatched ops of one model at one input size, as arrays (what the cost model needs)."""

    classes: np.ndarray  # index into COST_CLASSES
    work: np.ndarray
    activation_values: np.ndarray  # values read + written
    weight_values: np.ndarray

    @classmethod
    def from_cost(cls, cost: ModelCost) -> OpTable:
        ops = cost.dispatched
        return cls(
            classes=np.array([COST_CLASSES.index(op.cost_class) for op in ops], dtype=np.int64),
            work=np.array([op.work for op in ops], dtype=np.float64),
            activation_values=np.array(
                [(op.input_bytes + op.output_bytes) / 4 for op in ops], dtype=np.float64
            ),
            weight_values=np.array([op.params for op in ops], dtype=np.float64),
        )

    def to_json(self) -> dict[str, list]:
        return {k: v.tolist() for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, list]) -> OpTable:
        return cls(**{name: np.array(data[name]) for name in cls.__dataclass_fields__})


def analysis_versions() -> str:
    """The releases a table depends on, as cache keys name them: timm's and this analysis's."""
    import timm

    return f"timm-{timm.__version__}-v{ANALYSIS_CACHE_VERSION}"


@functools.cache
def op_table(arch: str, input_size: int) -> OpTable:
    """The op table of a timm architecture (1000 classes) at `input_size`: shipped, cached, or traced
    and then cached."""
    shipped = shipped_op_table(arch, input_size)
    return cached_op_table(arch, input_size) if shipped is None else shipped


def cached_op_table(arch: str, input_size: int) -> OpTable:
    """The table traced here: read from the cache, or traced and cached."""
    from edgekd._io import cached_json
    from edgekd.analysis import analyze
    from edgekd.catalog import build_model

    return cached_json(
        op_table_path(arch, input_size),
        lambda: OpTable.from_cost(analyze(build_model(arch, 1000), input_size)),
        OpTable.to_json,
        OpTable.from_json,
    )


def op_table_path(arch: str, input_size: int) -> Path:
    """Where `op_table` caches a table it traced."""
    return default_cache_dir() / "analysis" / analysis_versions() / f"{arch}@{input_size}.json"


def needs_tracing(arch: str, input_size: int) -> bool:
    """Whether `op_table` would trace this model: neither shipped nor cached."""
    shipped = _shipped_key(arch, input_size) in _shipped_tables(analysis_versions())
    return not shipped and not op_table_path(arch, input_size).exists()


def shipped_tables_path(versions: str | None = None) -> Path:
    return shipped_dir("profiles") / "op-tables" / f"{versions or analysis_versions()}.json.gz"


@functools.cache
def _shipped_tables(versions: str) -> dict[str, dict]:
    path = shipped_tables_path(versions)
    if not path.exists():
        return {}
    with gzip.open(path, "rt") as f:
        return json.load(f)


def _shipped_key(arch: str, input_size: int) -> str:
    return f"{arch}@{input_size}"


def shipped_op_table(arch: str, input_size: int) -> OpTable | None:
    """The shipped table of this model, when one was traced with the installed releases."""
    data = _shipped_tables(analysis_versions()).get(_shipped_key(arch, input_size))
    return None if data is None else OpTable.from_json(data)


def shipped_profile_models() -> list[tuple[str, int]]:
    """Every (model, input size) of the shipped profile rows, sorted."""
    from edgekd.profiles import read_profile_file

    return sorted(
        {
            (row.model, row.input_size)
            for path in sorted(shipped_dir("profiles").glob("*.csv"))
            for row in read_profile_file(path)
        }
    )


def write_shipped_tables(models: Iterable[tuple[str, int]], path: Path | None = None) -> Path:
    """Each model's table, traced here (or read from this machine's cache), written to `path`, by
    default the shipped file for the installed releases: atomically, keys sorted, so that a
    regenerated file differs only where a table did."""
    from edgekd._io import atomic_path

    path = path or shipped_tables_path()
    tables = {_shipped_key(arch, size): cached_op_table(arch, size).to_json() for arch, size in models}
    data = json.dumps(tables, sort_keys=True, separators=(",", ":")).encode()
    with atomic_path(path) as partial:
        Path(partial).write_bytes(gzip.compress(data, mtime=0))  # no name, no time: the same bytes
    _shipped_tables.cache_clear()
    return path


if __name__ == "__main__":
    from rich.progress import track

    models = shipped_profile_models()
    written = write_shipped_tables(track(models, f"tracing {len(models)} profile models", transient=True))
    print(f"wrote {written} ({len(models)} tables)", file=sys.stderr)
