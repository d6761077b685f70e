import dataclasses
import shutil

import pytest
import yaml

from edgekd._config import from_mapping, to_mapping
from edgekd.errors import ConfigError, UnknownNameError
from edgekd.targets import PRECISIONS, Target, get_target, list_targets, load_target, numeric_fields

REQUIRED = {"pi5", "pi4", "android-cpu", "apple-ane", "ethos-u55", "intel-cpu", "host"}


def test_the_required_targets_ship():
    assert set(list_targets()) >= REQUIRED


@pytest.mark.parametrize("name", list_targets())
def test_every_target_loads_cites_every_number_and_round_trips(name, tmp_path):
    target = get_target(name)
    assert target.name == name
    for field in numeric_fields(target):
        parts = field.split(".")
        assert any(".".join(parts[:i]) in target.sources for i in range(1, len(parts) + 1)), field
    assert set(target.precisions) <= set(PRECISIONS)
    assert target.input_size in target.allowed_input_sizes
    assert target.budgets.latency_ms > 0
    # Written back out and read again, the target is identical (what `targets show` and run configs rely on).
    # (`extends` and `detect` are resolved by then, so the written file is flat.)
    data = {k: v for k, v in to_mapping(target).items() if k not in ("extends", "detect")}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    flat = dataclasses.replace(target, extends=None, detect=False)
    assert from_mapping(Target, yaml.safe_load(path.read_text()), str(path)) == flat


def test_host_is_detected_not_specified():
    import os

    host = get_target("host")
    assert host.compute.cores == os.cpu_count()
    assert host.memory.bandwidth_gbps > 0.5
    assert "detected" in host.sources["compute"]


def test_ethos_u55_is_int8_only_with_mcu_memory():
    npu = get_target("ethos-u55")
    assert npu.precisions == ("int8",)
    assert npu.memory.sram_kb and npu.memory.flash_mb
    assert npu.latency_model.estimator == "vela"


def test_pi5_is_four_a76_cores_and_frozen():
    target = get_target("pi5")
    assert (target.compute.cores, target.compute.clock_ghz, target.compute.cpu) == (4, 2.4, "Cortex-A76")
    # 4 cores x 2.4 GHz x 16 FLOP/cycle
    assert target.peak_gflops == pytest.approx(4 * 2.4 * 16)
    assert target.format == "tflite" and "fp32" in target.precisions
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.input_size = 1


def test_unknown_target_lists_valid_names_and_closest():
    with pytest.raises(UnknownNameError, match=r"Unknown target 'pi55'\. Did you mean 'pi5'.*Valid: .*pi5"):
        get_target("pi55")


def _write(tmp_path, mutate):
    from edgekd.paths import shipped_dir

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
    from edgekd.paths import shipped_dir

    renamed = tmp_path / "pi9.yaml"
    shutil.copy(shipped_dir("targets") / "pi5.yaml", renamed)
    with pytest.raises(ConfigError, match="'name' is 'pi5' but the file is named 'pi9'"):
        load_target(renamed)


def _user_target(directory, name, body):
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.yaml").write_text(body)
    return directory


def test_extends_overrides_fields_and_keeps_the_rest(tmp_path):
    dirs = (
        _user_target(
            tmp_path / "mine",
            "pi5-fast",
            "name: pi5-fast\nextends: pi5\ndescription: a Pi 5 at 100 fps\n"
            "budgets: {latency_ms: 10}\nsources: {budgets.latency_ms: 'my app: 100 fps'}\n",
        ),
    )
    child, parent = get_target("pi5-fast", dirs), get_target("pi5")
    assert child.budgets.latency_ms == 10 and child.sources["budgets.latency_ms"] == "my app: 100 fps"
    assert child.budgets.peak_ram_mb == parent.budgets.peak_ram_mb  # merged key by key
    assert child.compute == parent.compute and child.extends == "pi5"


def test_extends_needs_a_citation_for_an_overridden_number(tmp_path):
    dirs = (
        _user_target(
            tmp_path, "pi5-x", "name: pi5-x\nextends: pi5\ndescription: x\ncompute: {clock_ghz: 3.0}\n"
        ),
    )
    with pytest.raises(
        ConfigError, match=r"pi5-x.yaml: overrides compute.clock_ghz of 'pi5' but cites no source"
    ):
        get_target("pi5-x", dirs)


def test_extends_errors_unknown_parent_and_cycle(tmp_path):
    dirs = (_user_target(tmp_path, "a", "name: a\nextends: pi55\ndescription: x\n"),)
    with pytest.raises(ConfigError, match=r"a.yaml: extends an unknown target.*Did you mean 'pi5'"):
        get_target("a", dirs)
    _user_target(tmp_path / "cycle", "a", "name: a\nextends: b\ndescription: x\n")
    _user_target(tmp_path / "cycle", "b", "name: b\nextends: a\ndescription: x\n")
    with pytest.raises(ConfigError, match=r"cycle: a -> b -> a"):
        get_target("a", (tmp_path / "cycle",))


def test_user_dirs_from_the_environment_and_no_silent_shadowing(tmp_path, monkeypatch):
    from edgekd.paths import shipped_dir

    mine = tmp_path / "env-targets"
    mine.mkdir()
    data = yaml.safe_load((shipped_dir("targets") / "pi5.yaml").read_text())
    data["name"] = "lab-pi"
    (mine / "lab-pi.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("EDGEKD_TARGETS_PATH", str(mine))
    assert "lab-pi" in list_targets() and get_target("lab-pi").compute.cores == 4
    shadowing = tmp_path / "shadowing"
    shadowing.mkdir()
    shutil.copy(shipped_dir("targets") / "pi5.yaml", shadowing / "pi5.yaml")
    with pytest.raises(ConfigError, match=r"'pi5' is defined twice.*extends: pi5"):
        get_target("pi5", (shadowing,))
