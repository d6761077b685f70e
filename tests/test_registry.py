import pytest

from edgekd._registry import Registry
from edgekd.errors import EdgeKDError, UnknownNameError


def test_duplicate_name_raises_instead_of_overwriting():
    registry = Registry("format")
    registry.add("tflite", 1)
    with pytest.raises(EdgeKDError, match="registered twice"):
        registry.add("tflite", 2)
    assert registry.get("tflite") == 1


def test_unknown_name_suggests_the_closest_and_lists_all():
    registry = Registry("target")
    for name in ("pi5", "pi4", "android-cpu"):
        registry.add(name, name)
    with pytest.raises(UnknownNameError) as info:
        registry.get("pi6")
    message = str(info.value)
    assert "Did you mean 'pi5'" in message or "Did you mean 'pi4'" in message
    assert "android-cpu, pi4, pi5" in message


def test_names_filter_by_pattern():
    registry = Registry("model")
    for name in ("mobilenetv3_small_050", "mobilenetv2_050", "resnet10t"):
        registry.add(name, None)
    assert registry.names("*mobile*") == ["mobilenetv2_050", "mobilenetv3_small_050"]
