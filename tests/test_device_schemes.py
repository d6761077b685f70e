"""Devices are reached through one registry keyed by URI scheme: each scheme's connector builds its
`Device`, a new kind of device is one registration, and an unknown scheme names the known ones."""

import pytest

from edgekd.devices.adb import ADBDevice
from edgekd.devices.local import LocalDevice
from edgekd.devices.registry import CONNECTORS, DeviceEntry, connect, connect_entry, scheme_of
from edgekd.devices.ssh import SSHDevice
from edgekd.errors import ConfigError


def test_each_scheme_reaches_its_own_device_class():
    assert sorted(CONNECTORS) == ["adb", "local", "ssh"]
    assert isinstance(connect("local"), LocalDevice)
    assert isinstance(connect("ssh://pi@raspberrypi.local:2222"), SSHDevice)
    phone = connect_entry(DeviceEntry("phone", "adb://SERIAL1", benchmark_model="/data/local/tmp/bm"))
    assert isinstance(phone, ADBDevice) and phone.uri == "adb://SERIAL1"


def test_a_new_scheme_is_one_registration():
    made = []

    def loopback(entry):
        made.append(entry.uri)
        return LocalDevice()

    CONNECTORS.add("loopback-test", loopback)
    assert isinstance(connect("loopback-test://anything"), LocalDevice)
    assert made == ["loopback-test://anything"]


@pytest.mark.parametrize("uri", ["ftp://host", "pi@host", "adb:/SERIAL"])
def test_an_unknown_scheme_names_the_known_ones(uri):
    with pytest.raises(
        ConfigError, match=r"known schemes: adb://\.\.\., local, (loopback-test://\.\.\., )?ssh://\.\.\."
    ):
        connect_entry(DeviceEntry("x", uri))
    assert scheme_of("local") == "local" and scheme_of("ssh://h") == "ssh" and scheme_of("pi@host") is None
