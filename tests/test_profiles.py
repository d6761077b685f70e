import dataclasses

import pytest
import timm

from edgekd.errors import ConfigError
from edgekd.paths import shipped_dir
from edgekd.profiles import COLUMNS, ProfileRow, read_profile, read_profile_file, write_profile_file

SHIPPED = sorted(p.stem for p in shipped_dir("profiles").glob("*.csv"))


def test_profiles_exist_for_the_measured_and_published_targets():
    assert {"host", "pi5", "pi4", "android-cpu", "apple-ane"} <= set(SHIPPED)


@pytest.mark.parametrize("target", SHIPPED)
def test_every_row_names_a_timm_model_and_its_source(target):
    rows = read_profile(target)
    assert rows
    for row in rows:
        assert timm.is_model(row.model), row
        assert row.source.strip() and "latency-references" not in row.source, row
        if target == "host":
            assert row.source.startswith("measured") and row.runtime == "litert" and row.latency_ms_p90
        else:  # a published figure cites where it was published
            assert "github.com" in row.source or "http" in row.source or "/" in row.source, row


def test_host_profile_covers_40_models_at_2_resolutions():
    rows = read_profile("host")
    models = {r.model for r in rows}
    by_model = {m: {r.input_size for r in rows if r.model == m} for m in models}
    assert len([m for m, sizes in by_model.items() if len(sizes) >= 2]) >= 40


def _row(**changes):
    row = ProfileRow(
        "resnet18", 224, "fp32", "litert", "2.3.0", 4, 12.5, 13.0, "measured: here", "2026-11-25"
    )
    return dataclasses.replace(row, **changes)


def test_write_then_read_round_trips(tmp_path):
    rows = [_row(), _row(model="lcnet_050", latency_ms_p90=None, statistic="mean", notes="a, quoted note")]
    path = tmp_path / "t.csv"
    write_profile_file(path, rows, "two rows\nfor a test")
    assert path.read_text().startswith("# two rows\n# for a test\n")
    assert sorted(read_profile_file(path), key=lambda r: r.model) == sorted(rows, key=lambda r: r.model)


def test_bad_rows_name_the_file_and_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(COLUMNS) + "\nresnet18,224,fp32,litert,x,4,fast,,src,2026\n")
    with pytest.raises(ConfigError, match=r"bad.csv, data row 2: could not convert string to float: 'fast'"):
        read_profile_file(path)
    path.write_text("model,input_size\nresnet18,224\n")
    with pytest.raises(ConfigError, match=r"bad.csv: missing columns \['precision'"):
        read_profile_file(path)
    with pytest.raises(ValueError, match="every row needs a source"):
        _row(source=" ")
