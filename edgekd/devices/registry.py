"""Named devices (`edgekd devices add pi ssh://pi@raspberrypi.local`) in the user's config directory,
and `connect()`: a device from a name or a URI (local, ssh://[user@]host[:port], adb://SERIAL).

The file is `devices.yaml` in `$EDGEKD_CONFIG_DIR`, else `$XDG_CONFIG_HOME/edgekd`, else
`~/.config/edgekd`.

Example:
    >>> connect("local").uri
    'local'
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from edgekd._io import write_with
from edgekd._registry import Registry
from edgekd.devices import Device, redacted
from edgekd.errors import ConfigError, UnknownNameError
from edgekd.paths import user_config_dir

DEVICES_FILE = "devices.yaml"


@dataclass(frozen=True)
class DeviceEntry:
    name: str
    uri: str
    python: str | None = None  # SSH: the device's Python (default python3)
    ssh_config: str | None = None  # SSH: an ssh_config file instead of ~/.ssh/config
    benchmark_model: str | None = None  # ADB: benchmark_model's path on the phone
    target: str | None = None  # the target this device is: `profile --record` writes its rows only there


ENTRY_KEYS = tuple(f.name for f in fields(DeviceEntry) if f.name != "name")


def devices_file() -> Path:
    return user_config_dir() / DEVICES_FILE


def load_devices() -> dict[str, DeviceEntry]:
    """The registered devices; a file of the wrong shape, or an entry whose URI holds a password, is
    refused with what to change in it."""
    path = devices_file()
    devices = _read_entries(path)
    for entry in devices.values():
        if _has_password(entry.uri):
            raise ConfigError(
                f"{path}: device {entry.name!r} has a password in its URI ({redacted(entry.uri)}); edgekd "
                "never uses one (ssh runs in batch mode). Delete it from the file (or `edgekd devices remove "
                f"{entry.name}` and add it again without it), change that password if others can read the "
                "file, and log in with a key (ssh-copy-id, ssh-agent, IdentityFile in ~/.ssh/config)."
            )
    return devices


def _read_entries(path: Path) -> dict[str, DeviceEntry]:
    if not path.exists():
        return {}
    shape = f"expected devices: {{NAME: {{uri: ..., {', '.join(ENTRY_KEYS[1:])} (optional)}}}}"
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line}; fix or delete it. {shape}.") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - {"devices"}:
        raise ConfigError(f"{path}: holds {reprlib.repr(raw)}, not a mapping of 'devices' alone; {shape}.")
    listed = raw.get("devices") or {}
    if not isinstance(listed, dict):
        raise ConfigError(f"{path}: 'devices' is {reprlib.repr(listed)}, not a mapping of names; {shape}.")
    devices = {}
    for name, entry in listed.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise ConfigError(f"{path}: device {name!r} is not a mapping of its settings; {shape}.")
        unknown = sorted(str(key) for key in set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ConfigError(
                f"{path}: device {name!r} has unknown key(s) {', '.join(unknown)}; "
                f"valid: {', '.join(ENTRY_KEYS)}."
            )
        if "uri" not in entry:
            raise ConfigError(f"{path}: device {name!r} has no uri; {shape}.")
        wrong = [key for key, value in entry.items() if not isinstance(value, str)]
        if wrong:
            raise ConfigError(f"{path}: device {name!r}: {', '.join(wrong)} must be text.")
        devices[name] = DeviceEntry(name=name, **entry)
    return devices


def _has_password(uri: str) -> bool:
    return "://" in uri and ":" in uri.split("://", 1)[1].split("/", 1)[0].rpartition("@")[0]


def save_devices(devices: dict[str, DeviceEntry]) -> Path:
    """Atomically, readable by the user alone (0600, also when an existing file was not): the file
    names hosts, users and ssh_config paths."""
    body = {
        "devices": {
            name: {k: v for k, v in asdict(e).items() if k != "name" and v is not None}
            for name, e in sorted(devices.items())
        }
    }
    text = yaml.safe_dump(body, sort_keys=False)

    def write(tmp: Path) -> None:
        tmp.chmod(0o600)  # before the content goes in
        tmp.write_text(text)

    return write_with(devices_file(), write)


def add_device(entry: DeviceEntry, *, replace: bool = False) -> Path:
    connect_entry(entry)  # a malformed URI fails before anything is written
    devices = load_devices()
    if entry.name in devices and not replace:
        raise ConfigError(
            f"a device named {entry.name!r} exists ({devices[entry.name].uri}); pass --replace."
        )
    if scheme_of(entry.name) is not None or entry.name.startswith("local"):
        raise ConfigError(f"{entry.name!r} looks like a URI; a device name is a plain word such as 'pi5'.")
    if entry.uri == "local" and entry.target not in (None, "host"):
        raise ConfigError(
            f"local is this machine, whose target is host, not {entry.target}; register the {entry.target} "
            "board itself (ssh://... or adb://...) for that target."
        )
    devices[entry.name] = entry
    return save_devices(devices)


def remove_device(name: str) -> Path:
    devices = _read_entries(devices_file())  # also an entry load_devices refuses (a password) can go
    if name not in devices:
        raise UnknownNameError(f"no device named {name!r}; known: {', '.join(devices) or 'none'}.")
    del devices[name]
    return save_devices(devices)


def _local(entry: DeviceEntry) -> Device:
    from edgekd.devices.local import LocalDevice

    return LocalDevice()


def _ssh(entry: DeviceEntry) -> Device:
    from edgekd.devices.ssh import SSHDevice

    options = {}
    if entry.python:
        options["python"] = entry.python
    if entry.ssh_config:
        options["ssh_config"] = Path(entry.ssh_config).expanduser()
    return SSHDevice.from_uri(entry.uri, **options)


def _adb(entry: DeviceEntry) -> Device:
    from edgekd.devices.adb import ADBDevice

    return ADBDevice.from_uri(
        entry.uri, **({"benchmark_model": entry.benchmark_model} if entry.benchmark_model else {})
    )


# The connector of each URI scheme ("local" is this machine): a new kind of device is one module with
# its `Device` plus one registration here. Connectors import their module only when called, so naming
# a device loads no SSH or ADB code it does not use.
CONNECTORS: Registry[Callable[[DeviceEntry], Device]] = Registry("device scheme")
CONNECTORS.add("local", _local)
CONNECTORS.add("ssh", _ssh)
CONNECTORS.add("adb", _adb)


def scheme_of(uri: str) -> str | None:
    """The registry key of `uri`: "local", the part before "://", or None for neither."""
    if uri == "local":
        return "local"
    return uri.split("://", 1)[0] if "://" in uri else None


def connect_entry(entry: DeviceEntry) -> Device:
    scheme = scheme_of(entry.uri)
    if scheme is None or scheme not in CONNECTORS:
        forms = ", ".join("local" if s == "local" else f"{s}://..." for s in CONNECTORS)
        raise ConfigError(
            f"device {redacted(entry.uri)!r}: write local, ssh://[user@]host[:port] or adb://SERIAL "
            f"(known schemes: {forms})."
        )
    return CONNECTORS.get(scheme)(entry)


def connect(spec: str) -> Device:
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
