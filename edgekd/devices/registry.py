"""Named devices (`edgekd devices add pi ssh://pi@raspberrypi.local`) in the user's config directory,
and `connect()`: a device from a name or a URI (local, ssh://[user@]host[:port], adb://SERIAL).

The file is `devices.yaml` in `$EDGEKD_CONFIG_DIR`, else `$XDG_CONFIG_HOME/edgekd`, else
`~/.config/edgekd`.

Example:
    >>> connect("local").uri
    'local'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from edgekd._io import write_text_atomic
from edgekd._resources import user_config_dir
from edgekd.errors import ConfigError, UnknownNameError

DEVICES_FILE = "devices.yaml"
SCHEMES = ("local", "ssh://", "adb://")


@dataclass(frozen=True)
class DeviceEntry:
    name: str
    uri: str
    python: str | None = None  # SSH: the device's Python (default python3)
    ssh_config: str | None = None  # SSH: an ssh_config file instead of ~/.ssh/config
    benchmark_model: str | None = None  # ADB: benchmark_model's path on the phone


def devices_file() -> Path:
    return user_config_dir() / DEVICES_FILE


def load_devices() -> dict[str, DeviceEntry]:
    path = devices_file()
    if not path.exists():
        return {}
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        return {name: DeviceEntry(name=name, **fields) for name, fields in (raw.get("devices") or {}).items()}
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e


def save_devices(devices: dict[str, DeviceEntry]) -> Path:
    body = {
        "devices": {
            name: {k: v for k, v in asdict(e).items() if k != "name" and v is not None}
            for name, e in sorted(devices.items())
        }
    }
    return write_text_atomic(devices_file(), yaml.safe_dump(body, sort_keys=False))


def add_device(entry: DeviceEntry, *, replace: bool = False) -> Path:
    connect_entry(entry)  # a malformed URI fails before anything is written
    devices = load_devices()
    if entry.name in devices and not replace:
        raise ConfigError(
            f"a device named {entry.name!r} exists ({devices[entry.name].uri}); pass --replace."
        )
    if any(entry.name.startswith(s) for s in SCHEMES):
        raise ConfigError(f"{entry.name!r} looks like a URI; a device name is a plain word such as 'pi5'.")
    devices[entry.name] = entry
    return save_devices(devices)


def remove_device(name: str) -> Path:
    devices = load_devices()
    if name not in devices:
        raise UnknownNameError(f"no device named {name!r}; known: {', '.join(devices) or 'none'}.")
    del devices[name]
    return save_devices(devices)


def connect_entry(entry: DeviceEntry):
    from edgekd.devices.adb import ADBDevice
    from edgekd.devices.local import LocalDevice
    from edgekd.devices.ssh import SSHDevice

    if entry.uri == "local":
        return LocalDevice()
    if entry.uri.startswith("ssh://"):
        options = {}
        if entry.python:
            options["python"] = entry.python
        if entry.ssh_config:
            options["ssh_config"] = Path(entry.ssh_config).expanduser()
        return SSHDevice.from_uri(entry.uri, **options)
    if entry.uri.startswith("adb://"):
        return ADBDevice.from_uri(
            entry.uri, **({"benchmark_model": entry.benchmark_model} if entry.benchmark_model else {})
        )
    raise ConfigError(f"device {entry.uri!r}: write local, ssh://[user@]host[:port] or adb://SERIAL.")


def connect(spec: str):
    """The device `spec` names: local, a URI, or a name from `edgekd devices add`."""
    if spec == "local" or "://" in spec:
        return connect_entry(DeviceEntry(name=spec, uri=spec))
    devices = load_devices()
    if spec not in devices:
        from edgekd._registry import did_you_mean

        known = did_you_mean(spec, list(devices)) if devices else " No device is registered yet."
        raise UnknownNameError(
            f"no device named {spec!r} in {devices_file()} (or give local, ssh://user@host[:port], "
            f"adb://SERIAL).{known}"
        )
    return connect_entry(devices[spec])
