import dataclasses
import shutil

import pytest
import yaml

from edgekd.errors import ConfigError, UnknownNameError
from edgekd.targets import get_target, list_targets, load_target, numeric_fields


@pytest.mark.parametrize("name", list_targets())
def test_every_target_loads_and_cites_every_number(name):
    target = get_target(name)
    assert target.name == name
    for field in numeric_fields(target):
        parts = field.split(".")
        assert any(".".join(parts[:i]) in target.sources for i in range(1, len(parts) + 1)), field


def test_pi5_is_four_a76_cores_and_frozen():
    target = get_target("pi5")
    assert (target.compute.cores, target.compute.clock_ghz, target.compute.cpu) == (4, 2.4, "Cortex-A76")
    # 4 cores x 2.4 GHz x 16 FLOP/cycle
    assert target.peak_gflops == pytest.approx(4 * 2.4 * 16)
    assert target.format == "tflite" and "fp32" in target.precisions
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.input_size = 1


def test_unknown_target_lists_valid_names_and_closest():
    with pytest.raises(UnknownNameError, match=r"Unknown target 'pi55'\. Did you mean 'pi5'\? Valid: .*pi5"):
        get_target("pi55")


def _write(tmp_path, mutate):
    from edgekd._resources import shipped_dir

    data = yaml.safe_load((shipped_dir("targets") / "pi5.yaml").read_text())
    mutate(data)
    path = tmp_path / "pi5.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_wrong_type_names_file_field_and_expected_type(tmp_path):
    path = _write(tmp_path, lambda d: d["compute"].__setitem__("cores", "four"))
    with pytest.raises(ConfigError) as info:
        load_target(path)
    message = str(info.value)
    assert (
        str(path) in message
        and "'compute.cores'" in message
        and "an integer" in message
        and "'four'" in message
    )


def test_unknown_field_suggests_the_right_one(tmp_path):
    path = _write(tmp_path, lambda d: d.__setitem__("threadz", 4))
    with pytest.raises(ConfigError, match=r"unknown field 'threadz'\. Did you mean 'threads'"):
        load_target(path)


def test_missing_field_and_missing_citation_are_errors(tmp_path):
    path = _write(tmp_path, lambda d: d.pop("runtime"))
    with pytest.raises(ConfigError, match="missing required field 'runtime'"):
        load_target(path)
    path = _write(tmp_path, lambda d: d["sources"].pop("compute.clock_ghz"))
    with pytest.raises(ConfigError, match="citation.*compute.clock_ghz"):
        load_target(path)


def test_invalid_yaml_and_name_mismatch(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_target(bad)
    from edgekd._resources import shipped_dir

    renamed = tmp_path / "pi9.yaml"
    shutil.copy(shipped_dir("targets") / "pi5.yaml", renamed)
    with pytest.raises(ConfigError, match="'name' is 'pi5' but the file is named 'pi9'"):
        load_target(renamed)
