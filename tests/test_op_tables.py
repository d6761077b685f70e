"""The op tables shipped for the profile rows' models: they cover every row, they are what tracing
gives, a fit reads them without tracing, and regenerating them gives the same bytes."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from edgekd.op_tables import (
    OpTable,
    analysis_versions,
    cached_op_table,
    needs_tracing,
    op_table,
    op_table_path,
    shipped_op_table,
    shipped_profile_models,
    shipped_tables_path,
    write_shipped_tables,
)
from edgekd.paths import shipped_dir


def _shipped_file():
    (path,) = (shipped_dir("profiles") / "op-tables").glob("*.json.gz")
    return path


def test_one_shipped_file_covers_every_model_of_the_shipped_profiles():
    with gzip.open(_shipped_file(), "rt") as f:
        keys = set(json.load(f))
    wanted = {f"{model}@{size}" for model, size in shipped_profile_models()}
    assert len(wanted) > 100
    assert wanted == keys, (
        f"regenerate with python -m edgekd.op_tables: missing {wanted - keys}, extra {keys - wanted}"
    )


@pytest.fixture
def installed_releases_shipped():
    if not shipped_tables_path().exists():
        shipped = _shipped_file().name
        pytest.skip(f"the shipped tables are {shipped}; this install is {analysis_versions()}: traced here")


def _assert_same(a: OpTable, b: OpTable) -> None:
    for field in OpTable.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.usefixtures("installed_releases_shipped")
def test_a_shipped_table_is_what_tracing_gives_and_is_read_without_tracing():
    arch, size = "mobilenetv2_100", 224  # a row of several targets' profiles
    assert (arch, size) in shipped_profile_models()
    assert not needs_tracing(arch, size)
    op_table.cache_clear()
    _assert_same(op_table(arch, size), shipped_op_table(arch, size))
    assert not op_table_path(arch, size).exists()  # a traced table is cached: nothing was traced
    _assert_same(shipped_op_table(arch, size), cached_op_table(arch, size))  # traced here now
    assert op_table_path(arch, size).exists()


def test_a_model_no_profile_has_is_traced_and_cached():
    arch, size = "lcnet_035", 40
    assert shipped_op_table(arch, size) is None and needs_tracing(arch, size)
    op_table.cache_clear()
    table = op_table(arch, size)
    assert op_table_path(arch, size).exists() and not needs_tracing(arch, size)
    assert table.work.sum() > 0 and len(table.classes) == len(table.work)


def test_regenerating_the_tables_gives_the_same_bytes(tmp_path):
    models = [("lcnet_035", 32), ("mobilenetv3_small_050", 32)]
    first = write_shipped_tables(models, tmp_path / "a.json.gz")
    second = write_shipped_tables(reversed(models), tmp_path / "b.json.gz")
    assert first.read_bytes() == second.read_bytes()
    with gzip.open(first, "rt") as f:
        tables = json.load(f)
    assert list(tables) == ["lcnet_035@32", "mobilenetv3_small_050@32"]
    _assert_same(OpTable.from_json(tables["lcnet_035@32"]), cached_op_table("lcnet_035", 32))
